"""Capture–recapture over a capture-history table: Chapman (two lists) and Poisson log-linear models (three or more).

Usable on its own for any list data. A *capture-history table* gives, for each pattern of presence (1) or
absence (0) on ``t`` lists, the number of individuals observed with exactly that pattern. It may be

- a pandas DataFrame with one 0/1 column per list and a ``count`` column (rows may be missing or repeated:
  missing observable patterns count as zero, repeats are summed; an all-zero row is ignored), or
- a mapping ``pattern -> count`` where a pattern is a tuple of 0/1 or a string such as ``"101"``.

Everything returns a :class:`PopulationEstimate` (observed, estimate, 95% lower/upper, method, model terms).

Methods (see docs/estimation.md for the assumptions and the published example reproduced in the tests):

- :func:`chapman` — Chapman's (1951) nearly unbiased two-sample estimator
  ``N = (n1+1)(n2+1)/(m+1) - 1``, Seber's (1970) variance
  ``(n1+1)(n2+1)(n1-m)(n2-m) / ((m+1)^2 (m+2))`` and Chao's (1987) log-normal interval on the unseen part,
  which never falls below the number observed.
- :func:`loglinear` — Poisson GLM (statsmodels) on the ``2^t - 1`` observable cells with an intercept, ``t``
  main effects and selected two-list interactions; the unobserved cell is ``exp(intercept)``. Model choice
  (``interactions="auto"``) is the forward stepwise rule of Chan, Silverman & Vincent (2021, JASA 116:1297):
  start from main effects; for each admissible pair not yet in the model compare the observed overlap
  ``n*_ij`` with its expectation under the current model, p = min(P(X <= n*), P(X >= n*)),
  X ~ Poisson(expected); add the pair with the smallest p while p < ``pthresh`` (default 0.02, their
  recommendation). ``criterion="aic"``/``"bic"`` instead adds the pair that lowers AIC/BIC most.
  Guard: a pair is admissible only if the two lists overlap (``n*_ij > 0``; otherwise its MLE is -inf) and the
  model with it has a full-rank design and a converged fit with finite coefficients and a finite dark figure.
  95% interval: multinomial profile likelihood for N given the selected model (Cormack 1992; as in Rcapture's
  ``closedpCI``), or a seeded parametric bootstrap that repeats the model choice in every replicate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Literal

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import optimize, stats

Z95 = 1.959963984540054
FLOOR = 0.05  # smallest dark figure the profile search evaluates (see profile_interval)
Pair = tuple[str, str]
Histories = pd.DataFrame | Mapping[object, float]


@dataclass(frozen=True)
class PopulationEstimate:
    """A population-size estimate with its 95% interval. ``estimate`` includes the ``observed``."""

    observed: int
    estimate: float
    lower: float
    upper: float
    method: str  # "chapman", "loglinear" or "observed" (too few lists to estimate anything unseen)
    terms: tuple[str, ...] = ()  # model terms, e.g. ("A", "B", "C", "A:B")
    lists: tuple[str, ...] = ()
    interval: str = ""  # how the interval was obtained
    details: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def unseen(self) -> float:
        return self.estimate - self.observed

    def as_dict(self) -> dict[str, object]:
        return {
            "observed": self.observed,
            "estimate": self.estimate,
            "lower": self.lower,
            "upper": self.upper,
            "method": self.method,
            "terms": " + ".join(self.terms),
            "interval": self.interval,
        }


# --------------------------------------------------------------------------- capture-history tables


@dataclass(frozen=True)
class Table:
    """All ``2^t - 1`` observable patterns (rows of ``patterns``) and their counts, in a fixed order."""

    lists: tuple[str, ...]
    patterns: np.ndarray  # (2^t - 1, t) of 0/1
    counts: np.ndarray  # (2^t - 1,) float

    @property
    def observed(self) -> int:
        return round(float(self.counts.sum()))

    def overlap(self, i: int, j: int) -> float:
        """Individuals seen on both lists i and j (whatever else they were seen on)."""
        mask = (self.patterns[:, i] == 1) & (self.patterns[:, j] == 1)
        return float(self.counts[mask].sum())

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.patterns, columns=list(self.lists))
        frame["count"] = self.counts
        return frame


def all_patterns(t: int) -> np.ndarray:
    """Every non-empty 0/1 pattern over t lists, ordered by the binary number with list 1 as the lowest bit."""
    return np.array([[(k >> i) & 1 for i in range(t)] for k in range(1, 2**t)], dtype=int)


def _pattern_tuple(key: object, t: int | None) -> tuple[int, ...]:
    text = isinstance(key, str)
    bits = tuple(int(c) for c in key.strip() if c in "01") if text else tuple(int(b) for b in key)  # type: ignore
    if any(b not in (0, 1) for b in bits) or (t is not None and len(bits) != t):
        raise ValueError(f"capture pattern {key!r} is not a 0/1 pattern over {t} lists")
    return bits


def table(histories: Histories | Table, lists: Sequence[str] | None = None) -> Table:
    """Normalise a capture-history table (DataFrame with 0/1 columns + ``count``, or a mapping)."""
    if isinstance(histories, Table):
        return histories
    if isinstance(histories, pd.DataFrame):
        if "count" not in histories.columns:
            raise ValueError("a capture-history table needs a 'count' column")
        names = tuple(lists or [c for c in histories.columns if c != "count"])
        rows = histories[list(names)].to_numpy()
        if not np.isin(rows, (0, 1)).all():
            raise ValueError("list columns must hold only 0 and 1")
        cells: dict[tuple[int, ...], float] = {}
        for bits, count in zip(map(tuple, rows.astype(int)), histories["count"].to_numpy(float), strict=True):
            cells[bits] = cells.get(bits, 0.0) + count
    else:
        items = list(histories.items())
        if not items:
            raise ValueError("empty capture-history table")
        t = len(_pattern_tuple(items[0][0], None))
        names = tuple(lists or [chr(ord("A") + i) for i in range(t)])
        cells = {}
        for key, count in items:
            bits = _pattern_tuple(key, len(names))
            cells[bits] = cells.get(bits, 0.0) + float(count)
    t = len(names)
    if t < 1:
        raise ValueError("a capture-history table needs at least one list")
    if any(c < 0 or not math.isfinite(c) for c in cells.values()):
        raise ValueError("counts must be finite and non-negative")
    patterns = all_patterns(t)
    counts = np.array([cells.get(tuple(row), 0.0) for row in patterns], dtype=float)
    return Table(names, patterns, counts)


def read_histories_csv(path: str) -> Table:
    """Read a CSV with one 0/1 column per list plus ``count``."""
    return table(pd.read_csv(path))


# --------------------------------------------------------------------------- Chapman


def chapman(n1: int, n2: int, m: int) -> PopulationEstimate:
    """Chapman's estimator for two lists of sizes ``n1``, ``n2`` with ``m`` individuals on both.

    Variance: Seber (1970). Interval: Chao (1987) log-normal on the unseen part f0 = N - r (r = n1 + n2 - m
    observed), ``[r + f0/C, r + f0*C]`` with ``C = exp(1.96 sqrt(log(1 + var/f0^2)))``.
    """
    if min(n1, n2, m) < 0 or m > min(n1, n2):
        raise ValueError(f"need 0 <= m <= min(n1, n2); got n1={n1}, n2={n2}, m={m}")
    observed = n1 + n2 - m
    estimate = (n1 + 1) * (n2 + 1) / (m + 1) - 1
    var = (n1 + 1) * (n2 + 1) * (n1 - m) * (n2 - m) / ((m + 1) ** 2 * (m + 2))
    f0 = estimate - observed
    if f0 <= 0 or var <= 0:
        lower = upper = float(max(estimate, observed))
    else:
        c = math.exp(Z95 * math.sqrt(math.log(1 + var / f0**2)))
        lower, upper = observed + f0 / c, observed + f0 * c
    return PopulationEstimate(
        observed=observed,
        estimate=estimate,
        lower=lower,
        upper=upper,
        method="chapman",
        terms=(),
        interval="Seber variance, Chao log-normal 95% interval",
        details={"n1": n1, "n2": n2, "m": m, "se": math.sqrt(var)},
    )


def chapman_histories(histories: Histories | Table) -> PopulationEstimate:
    """Chapman's estimator from a two-list capture-history table."""
    tab = table(histories)
    if len(tab.lists) != 2:
        raise ValueError(f"Chapman needs exactly two lists, got {len(tab.lists)}")
    n1 = round(tab.counts[tab.patterns[:, 0] == 1].sum())
    n2 = round(tab.counts[tab.patterns[:, 1] == 1].sum())
    m = round(tab.overlap(0, 1))
    est = chapman(n1, n2, m)
    return PopulationEstimate(**{**est.__dict__, "lists": tab.lists})


# --------------------------------------------------------------------------- log-linear models


@dataclass(frozen=True)
class Fit:
    pairs: tuple[tuple[int, int], ...]
    params: np.ndarray
    fitted: np.ndarray
    deviance: float
    llf: float
    aic: float
    bic: float
    dark: float  # exp(intercept): the fitted count of the unobserved cell

    @property
    def n_params(self) -> int:
        return len(self.params)


HETEROGENEITY: tuple[int, int] = (-1, -1)  # pseudo-pair standing for Darroch's heterogeneity term


def design(patterns: np.ndarray, pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """Intercept, main effects, then one column per term: x_i x_j for a pair, k^2/2 (k = lists an individual is
    on) for the heterogeneity term ``HETEROGENEITY`` (Darroch et al. 1993; Rcapture's model "Mth Darroch")."""
    cols = [np.ones(len(patterns)), *(patterns[:, i] for i in range(patterns.shape[1]))]
    k = patterns.sum(axis=1)
    cols += [k**2 / 2 if (i, j) == HETEROGENEITY else patterns[:, i] * patterns[:, j] for i, j in pairs]
    return np.column_stack(cols).astype(float)


def _glm(x: np.ndarray, y: np.ndarray, start: np.ndarray | None = None) -> sm.GLM:
    with warnings.catch_warnings():
        # Non-integer counts (profile likelihood) and near-boundary fits warn; the caller checks the result.
        warnings.simplefilter("ignore")
        return sm.GLM(y, x, family=sm.families.Poisson()).fit(start_params=start, maxiter=100, tol=1e-10)


def fit_model(tab: Table, pairs: Sequence[tuple[int, int]]) -> Fit | None:
    """Fit one model; None when it is not identifiable or the fit is degenerate (the guard).

    A pair of lists with no individual in common has an interaction MLE of -inf (an "extended" MLE, Fienberg &
    Rinaldo 2012); such models are refused here rather than fitted to a numerically huge negative coefficient.
    """
    if any((i, j) != HETEROGENEITY and tab.overlap(i, j) <= 0 for i, j in pairs):
        return None
    x = design(tab.patterns, pairs)
    if np.linalg.matrix_rank(x) < x.shape[1]:
        return None
    try:
        res = _glm(x, tab.counts)
    except (ValueError, np.linalg.LinAlgError, FloatingPointError):
        return None
    params = np.asarray(res.params, dtype=float)
    converged = bool(getattr(res, "converged", True))
    # A coefficient this large means an MLE at infinity (a zero margin the model tries to fit exactly).
    if not converged or not np.all(np.isfinite(params)) or np.max(np.abs(params)) > 25:
        return None
    # Darroch's coefficient is the variance of log-catchability between individuals: a negative one describes no
    # population (it would mean individuals on more lists are *less* alike), so the term is not admitted.
    if HETEROGENEITY in pairs and params[1 + len(tab.lists) + list(pairs).index(HETEROGENEITY)] < 0:
        return None
    dark = float(np.exp(params[0]))
    if not math.isfinite(dark):
        return None
    n = tab.counts.sum()
    k = len(params)
    llf = float(res.llf)
    return Fit(
        pairs=tuple(pairs),
        params=params,
        fitted=np.asarray(res.fittedvalues, dtype=float),
        deviance=float(res.deviance),
        llf=llf,
        aic=-2 * llf + 2 * k,
        bic=-2 * llf + k * math.log(max(n, 1.0)),
        dark=dark,
    )


def _overlap_pvalue(tab: Table, fit: Fit, i: int, j: int) -> float:
    mask = (tab.patterns[:, i] == 1) & (tab.patterns[:, j] == 1)
    observed = tab.counts[mask].sum()
    expected = fit.fitted[mask].sum()
    return float(min(stats.poisson.cdf(observed, expected), stats.poisson.sf(observed - 1, expected)))


Criterion = Literal["pvalue", "aic", "bic"]


def select_model(
    tab: Table,
    criterion: Criterion = "pvalue",
    pthresh: float = 0.02,
    max_pairs: int | None = None,
    heterogeneity: bool = False,
) -> Fit:
    """Forward stepwise choice of two-list interactions (see the module docstring). With ``heterogeneity`` the
    Darroch term is one more candidate, judged by its likelihood-ratio p-value (or AIC/BIC). Raises if even the
    main-effects model cannot be fitted."""
    t = len(tab.lists)
    current = fit_model(tab, [])
    if current is None:
        raise ValueError("the main-effects model cannot be fitted to this table")
    candidates = [p for p in combinations(range(t), 2) if tab.overlap(*p) > 0]
    if heterogeneity:
        candidates.append(HETEROGENEITY)
    limit = max_pairs if max_pairs is not None else len(candidates)
    while candidates and len(current.pairs) < limit:
        best: tuple[float, Fit, tuple[int, int]] | None = None
        for pair in candidates:
            trial = fit_model(tab, [*current.pairs, pair])
            if trial is None:
                continue
            if criterion == "pvalue" and pair == HETEROGENEITY:
                score = float(stats.chi2.sf(max(current.deviance - trial.deviance, 0.0), 1))
                ok = score < pthresh
            elif criterion == "pvalue":
                score = _overlap_pvalue(tab, current, *pair)
                ok = score < pthresh
            else:
                score = trial.aic if criterion == "aic" else trial.bic
                ok = score < (current.aic if criterion == "aic" else current.bic)
            if ok and (best is None or score < best[0]):
                best = (score, trial, pair)
        if best is None:
            break
        current = best[1]
        candidates.remove(best[2])
    return current


@dataclass(frozen=True)
class ProfilePoint:
    """The profile log-likelihood at one dark figure and the coefficients behind it (None: no acceptable fit)."""

    loglik: float
    params: np.ndarray | None


def _accepted(res: object) -> bool:
    """A statsmodels fit we use: IRLS converged and every coefficient is finite."""
    params = np.asarray(getattr(res, "params", [math.nan]), dtype=float)
    return bool(getattr(res, "converged", False)) and bool(np.all(np.isfinite(params)))


def _fit_complete(x: np.ndarray, y: np.ndarray, start: np.ndarray | None) -> object | None:
    """Fit from ``start`` (a warm start); when that fails, refit cold (statsmodels' own start)."""
    starts = [start, None] if start is not None and len(start) == x.shape[1] else [None]
    for s in starts:
        try:
            res = _glm(x, y, s)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            continue
        if _accepted(res):
            return res
    return None


def profile_loglik(tab: Table, pairs: Sequence[tuple[int, int]], n0: float,
                   start: np.ndarray | None = None) -> ProfilePoint:
    """Multinomial log-likelihood of N = n + n0, maximised over the log-linear model's cell probabilities.

    Fitting the Poisson model (statsmodels' GLM) to the complete table, its unobserved cell set to ``n0``, gives
    fitted means that sum to N; the multinomial log-likelihood is then
    ``lgamma(N+1) - sum lgamma(n_w+1) + sum n_w log(mu_w/N)``. A fit counts only when it converged with finite
    coefficients (a warm ``start`` that fails is retried cold) and its log-likelihood is not positive: a
    probability cannot exceed 1, so a positive value means means that do not sum to N, i.e. a diverged fit.
    Darroch's heterogeneity coefficient is a variance: where the unconstrained fit makes it negative it is held
    at its boundary 0 (the Poisson log-likelihood is concave, so that is the constrained maximum). ``loglik`` is
    NaN when no acceptable fit exists.
    """
    y = np.append(tab.counts, max(n0, 0.0))
    terms = list(pairs)
    while True:
        x = design(np.vstack([tab.patterns, np.zeros((1, len(tab.lists)), int)]), terms)
        res = _fit_complete(x, y, start)
        if res is None:
            return ProfilePoint(math.nan, None)
        params = np.asarray(res.params, dtype=float)  # type: ignore[attr-defined]
        if HETEROGENEITY in terms and params[1 + len(tab.lists) + terms.index(HETEROGENEITY)] < 0:
            terms.remove(HETEROGENEITY)
            continue
        break
    mu = np.asarray(res.fittedvalues, dtype=float)  # type: ignore[attr-defined]
    total = float(y.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = np.where(y > 0, y * np.log(mu / total), 0.0)
    value = math.lgamma(total + 1) - sum(math.lgamma(v + 1) for v in y.tolist()) + float(kernel.sum())
    if not math.isfinite(value) or value > 1e-9 * total:
        return ProfilePoint(math.nan, None)
    if len(terms) < len(pairs):  # the variance held at 0: report it in the model's own layout
        params = np.insert(params, 1 + len(tab.lists) + list(pairs).index(HETEROGENEITY), 0.0)
    return ProfilePoint(value, params)


@dataclass(frozen=True)
class Interval:
    """A profile-likelihood interval for N; ``note`` says why an end was left open, if one was."""

    lower: float
    upper: float
    note: str = ""


class _FitFailed(Exception):
    def __init__(self, n0: float):
        super().__init__(f"no fit converged at N = observed + {n0:,.1f}")
        self.n0 = n0


def profile_interval(tab: Table, fit: Fit, alpha: float = 0.05) -> Interval:
    """Profile-likelihood interval for N under the fitted model (Cormack 1992).

    Every point is a statsmodels fit checked by :func:`profile_loglik`, warm-started from its neighbour. Where no
    acceptable fit can be found at a point the search needs, the end it was looking for is left open (the
    observed count below, unbounded above) and ``note`` says so: an interval that may be too wide, never one that
    is too narrow.
    """
    n = float(tab.counts.sum())
    warm: list[np.ndarray | None] = [fit.params.copy()]

    def ll(n0: float) -> float:
        point = profile_loglik(tab, fit.pairs, n0, warm[0])
        if point.params is None:
            raise _FitFailed(n0)
        warm[0] = point.params
        return point.loglik

    def ll_or_nan(n0: float) -> float:
        try:
            return ll(n0)
        except _FitFailed:
            return math.nan

    # Locate the maximum on a geometric grid (extended while the likelihood still rises), then refine it. Counts
    # need no more precision than a hundredth of an individual.
    grid = list(np.geomspace(FLOOR, max(10.0, 4 * fit.dark + 10), 25))
    values = [ll_or_nan(v) for v in grid]
    if all(math.isnan(v) for v in values):
        return Interval(n, math.inf, "no profile fit converged")
    while int(np.nanargmax(values)) == len(grid) - 1 and grid[-1] < 1e9 * max(n, 1):
        grid.append(grid[-1] * 2)
        values.append(ll_or_nan(grid[-1]))
    k = int(np.nanargmax(values))
    n0_hat, ll_max = grid[k], values[k]
    try:
        opt = optimize.minimize_scalar(lambda v: -ll(v), bounds=(grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]),
                                       method="bounded", options={"xatol": 0.01})
        if -float(opt.fun) > ll_max:
            n0_hat, ll_max = float(opt.x), -float(opt.fun)
    except _FitFailed:
        pass  # the grid's best point stands
    cut = ll_max - stats.chi2.ppf(1 - alpha, 1) / 2
    notes = []

    def g(v: float) -> float:
        return ll(v) - cut

    # n0 = 0 is a boundary where the model's MLE does not exist (the intercept goes to -inf); when the likelihood
    # is still above the cut at a tiny dark figure the interval reaches down to the observed count.
    floor = min(FLOOR, n0_hat / 2)
    try:
        lower = 0.0 if g(floor) > 0 else optimize.brentq(g, floor, n0_hat, xtol=0.01)
    except _FitFailed as exc:
        lower = 0.0
        notes.append(f"lower end left at the observed count: {exc}")
    upper = math.inf
    try:
        top = max(2 * n0_hat + 10, 10.0)
        for _ in range(60):  # widen until the likelihood has dropped below the cut
            if g(top) < 0:
                upper = optimize.brentq(g, n0_hat, top, xtol=0.01)
                break
            top *= 2
    except _FitFailed as exc:
        notes.append(f"upper end left unbounded: {exc}")
    return Interval(n + lower, n + upper, "; ".join(notes))


def _term_names(lists: Sequence[str], pairs: Iterable[tuple[int, int]]) -> tuple[str, ...]:
    return (*lists, *("H(Darroch)" if (i, j) == HETEROGENEITY else f"{lists[i]}:{lists[j]}" for i, j in pairs))


def loglinear(
    histories: Histories | Table,
    interactions: Literal["auto", "none"] | Sequence[Pair] = "auto",
    *,
    criterion: Criterion = "pvalue",
    pthresh: float = 0.02,
    ci: Literal["profile", "bootstrap"] = "profile",
    alpha: float = 0.05,
    n_boot: int = 500,
    seed: int = 0,
    heterogeneity: bool = False,
) -> PopulationEstimate:
    """Poisson log-linear multiple-systems estimate (t >= 2 lists; normally t >= 3).

    ``heterogeneity``: also consider Darroch's heterogeneity term (catchability varying between individuals,
    which makes every pair of lists look positively dependent); with ``"auto"`` it is one more stepwise
    candidate, otherwise it is added to the given model.

    ``interactions``: ``"auto"`` (stepwise choice, see module docstring), ``"none"`` (main effects: lists
    independent) or an explicit list of list-name pairs such as ``[("A", "B")]``.
    ``ci``: ``"profile"`` (multinomial profile likelihood given the chosen model) or ``"bootstrap"``
    (parametric bootstrap from the fitted model, ``n_boot`` replicates seeded by ``seed``, model choice repeated
    in every replicate, percentile interval).
    """
    tab = table(histories)
    t = len(tab.lists)
    if t < 2:
        raise ValueError("a log-linear estimate needs at least two lists")
    n = tab.counts.sum()
    full = [tab.lists[i] for i in range(t) if n > 0 and tab.counts[tab.patterns[:, i] == 1].sum() >= n]
    no_overlap = n > 0 and tab.counts[tab.patterns.sum(axis=1) >= 2].sum() == 0
    if full or no_overlap:
        # Everyone seen is on one list (its catch rate's MLE is 1, the dark figure's 0), or nobody is on two lists
        # (the dark figure's MLE is infinite): either way the data say nothing about how many were missed.
        why = (f"list {full[0]} holds every observed individual" if full
               else "no individual is on two lists, so there is no overlap to estimate from")
        return PopulationEstimate(
            observed=round(n), estimate=float(n), lower=float(n), upper=math.inf, method="loglinear",
            terms=(), lists=tab.lists, interval=f"none: {why}; the interval is [observed, unbounded)",
            details={"boundary": full[0] if full else "no overlap"},
        )
    if interactions == "auto":
        fit = select_model(tab, criterion, pthresh, heterogeneity=heterogeneity)
    else:
        pairs: list[tuple[int, int]] = []
        if interactions != "none":
            index = {name: k for k, name in enumerate(tab.lists)}
            for a, b in interactions:
                i, j = sorted((index[a], index[b]))
                pairs.append((i, j))
        if heterogeneity:
            pairs.append(HETEROGENEITY)
        chosen = fit_model(tab, pairs)
        if chosen is None:
            raise ValueError(f"model {_term_names(tab.lists, pairs)} is not identifiable for this table (or its "
                             "heterogeneity variance is negative)")
        fit = chosen
    estimate = n + fit.dark
    if ci == "bootstrap":
        lower, upper = _bootstrap_interval(tab, fit, interactions, criterion, pthresh, alpha, n_boot, seed,
                                           heterogeneity)
        how = f"parametric bootstrap, {n_boot} replicates, seed {seed}, model choice repeated"
    if ci != "bootstrap" or not (math.isfinite(lower) and math.isfinite(upper)):
        # (the bootstrap falls back on the profile when too few replicates could be fitted)
        prof = profile_interval(tab, fit, alpha)
        lower, upper = prof.lower, prof.upper
        how = ("profile likelihood (given the chosen model)" if ci != "bootstrap"
               else "profile likelihood (the bootstrap failed in most replicates)")
        how += f"; {prof.note}" if prof.note else ""
    return PopulationEstimate(
        observed=round(n),
        estimate=float(estimate),
        lower=float(min(lower, estimate)),
        upper=float(max(upper, estimate)),
        method="loglinear",
        terms=_term_names(tab.lists, fit.pairs),
        lists=tab.lists,
        interval=how,
        details={
            "deviance": fit.deviance,
            "df": len(tab.counts) - fit.n_params,
            "aic": fit.aic,
            "bic": fit.bic,
            "selection": criterion if interactions == "auto" else "fixed",
            "heterogeneity": int(HETEROGENEITY in fit.pairs),
        },
    )


def _bootstrap_interval(
    tab: Table,
    fit: Fit,
    interactions: object,
    criterion: Criterion,
    pthresh: float,
    alpha: float,
    n_boot: int,
    seed: int,
    heterogeneity: bool = False,
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    n_hat = tab.counts.sum() + fit.dark
    total = round(n_hat)
    probs = np.append(fit.fitted, fit.dark)
    probs = probs / probs.sum()
    estimates = []
    for _ in range(n_boot):
        draw = rng.multinomial(total, probs)
        boot = Table(tab.lists, tab.patterns, draw[:-1].astype(float))
        try:
            auto = interactions == "auto"
            bfit = (select_model(boot, criterion, pthresh, heterogeneity=heterogeneity) if auto
                    else fit_model(boot, fit.pairs))
        except ValueError:
            bfit = None
        if bfit is not None:
            estimates.append(boot.counts.sum() + bfit.dark)
    if len(estimates) < max(20, n_boot // 2):
        return math.nan, math.nan
    lo, hi = np.quantile(estimates, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def estimate(histories: Histories | Table, **kwargs: object) -> PopulationEstimate:
    """Chapman for two lists, log-linear for three or more; for one list (or nobody seen) the observed count with
    the interval [observed, unbounded)."""
    tab = table(histories)
    if len(tab.lists) == 1 or tab.observed == 0:
        # One list says nothing about who it missed: [observed, unbounded), not a point claimed as certain.
        n = tab.observed
        return PopulationEstimate(n, float(n), float(n), math.inf, "observed", lists=tab.lists,
                                  interval="none: no overlap information, the interval is [observed, unbounded)")
    if len(tab.lists) == 2:
        return chapman_histories(tab)
    return loglinear(tab, **kwargs)  # type: ignore[arg-type]


def histories_from_sets(sets: Mapping[str, set[object]] | Sequence[set[object]]) -> Table:
    """Capture-history table from explicit sets (testing and small data)."""
    named = dict(sets) if isinstance(sets, Mapping) else {chr(ord("A") + i): s for i, s in enumerate(sets)}
    names = tuple(named)
    everyone = set().union(*named.values())
    cells: dict[tuple[int, ...], float] = {}
    for item in everyone:
        bits = tuple(int(item in named[name]) for name in names)
        cells[bits] = cells.get(bits, 0.0) + 1
    if not cells:
        cells[tuple(1 for _ in names)] = 0.0
    return table(cells, names)


__all__ = [
    "PopulationEstimate",
    "Table",
    "all_patterns",
    "chapman",
    "chapman_histories",
    "estimate",
    "histories_from_sets",
    "loglinear",
    "profile_interval",
    "profile_loglik",
    "read_histories_csv",
    "select_model",
    "table",
]

