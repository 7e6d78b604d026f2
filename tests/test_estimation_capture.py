"""Capture–recapture estimators: published multiple-systems estimates reproduced, Chapman, guards, inputs, CLI.

Published tables used here (see docs/estimation.md, "Reproducing published estimates"):

- Korea: three lists of Korean women held in military sexual slavery in Palembang (Ball, Shin & Yang 2018,
  HRDAG, "There may have been 14 undocumented Korean 'comfort women' in Palembang, Indonesia"), as shipped in
  B. W. Silverman's R package MultipleSystemsEstimation (dataset ``Korea``; its user guide and the vignette
  reproducing Chan, Silverman & Vincent 2021). Published there: stepwise (p = 0.02) model ``[12,3]`` (the b:c
  interaction) with population estimate 268.7778, residual deviance 8.566946 and AIC 44.90767; the BIC-best model
  ``[12,23]`` gives 157.1667; main effects only ``[1,2,3]`` give 141.9926.
- Western: five lists of victims of sex trafficking at a U.S. "Western site" (Farrell et al. 2019, NIJ report
  2015-VF-GX-0105), analysed in Chan, Silverman & Vincent (2021), JASA 116:1297, Section 4.2: stepwise selection
  (p = 0.02) chooses the single two-list effect AE and the point estimate is 2483 (package output 2483.384,
  deviance 26.58423, AIC 91.8395). The table below is the package's printed response vector ``fit$y`` for that
  fit, whose cell order (capture history k-1 in binary, list A the lowest bit) we checked on the Korea table.
- Artificial_3 (Chan, Silverman & Vincent 2021, Table 2): the AB-only model has no MLE and the model with all three
  two-list effects is not identifiable; main effects are fine.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from estimation import capture
from estimation.capture import chapman, fit_model, loglinear, table

KOREA = pd.DataFrame(
    [(0, 0, 1, 41), (0, 1, 0, 5), (1, 0, 0, 5), (1, 1, 0, 54), (1, 0, 1, 6), (0, 1, 1, 0), (1, 1, 1, 12)],
    columns=["b", "c", "d", "count"],
)

# Western site, cells 2..32 of the package's encoding (history k-1 in binary, list A = lowest bit); zeros omitted.
WESTERN_Y = {2: 52, 3: 90, 5: 114, 6: 4, 7: 6, 9: 45, 10: 2, 11: 1, 15: 1, 17: 21, 18: 5, 22: 1, 25: 3}
WESTERN = {tuple(((i - 1) >> b) & 1 for b in range(5)): WESTERN_Y.get(i, 0) for i in range(2, 33)}

ARTIFICIAL_3 = {"100": 40, "010": 30, "001": 20, "110": 6}


def test_korea_stepwise_reproduces_the_published_estimate() -> None:
    est = loglinear(KOREA)
    assert est.observed == 123
    assert est.estimate == pytest.approx(268.7778, abs=1e-4)
    assert est.terms == ("b", "c", "d", "b:c")
    assert est.details["deviance"] == pytest.approx(8.566946, abs=1e-6)
    assert est.details["aic"] == pytest.approx(44.90767, abs=1e-5)
    assert est.lower < est.estimate < est.upper


def test_korea_fixed_models_reproduce_published_estimates() -> None:
    assert loglinear(KOREA, [("b", "c"), ("c", "d")]).estimate == pytest.approx(157.1667, abs=1e-4)
    assert loglinear(KOREA, "none").estimate == pytest.approx(141.9926, abs=1e-4)


def test_western_five_lists_reproduces_chan_silverman_vincent_2021() -> None:
    est = loglinear(WESTERN)
    assert est.observed == 345
    assert est.terms == ("A", "B", "C", "D", "E", "A:E")
    assert round(est.estimate) == 2483
    assert est.estimate == pytest.approx(2483.384, abs=1e-3)
    assert est.details["deviance"] == pytest.approx(26.58423, abs=1e-5)


def test_artificial_3_guards_match_the_published_diagnosis() -> None:
    tab = table(ARTIFICIAL_3)
    assert fit_model(tab, []) is not None
    assert fit_model(tab, [(0, 1)]) is None  # AB alone: MLE does not exist
    assert fit_model(tab, [(0, 1), (0, 2), (1, 2)]) is None  # not identifiable
    assert loglinear(ARTIFICIAL_3).terms == ("A", "B", "C")  # auto never picks an inadmissible pair
    with pytest.raises(ValueError, match="not identifiable"):
        loglinear(ARTIFICIAL_3, [("A", "C")])  # A and C never overlap: its MLE is -inf


# Issue 13: 300 seen only on each of three lists, 20 on each pair, 12 on all three (972 seen). Many more on all
# three than independent lists would give: Darroch's heterogeneity term is chosen, and the dark figure is large.
THREE_LISTS = {"100": 300, "010": 300, "001": 300, "110": 20, "101": 20, "011": 20, "111": 12}


def _brute_force_profile(counts: dict[str, int], alpha: float = 0.05) -> tuple[float, float, float]:
    """(MLE, lower, upper) of N for the model A + B + C + Darroch's k^2/2, written out independently of
    estimation.capture: the complete 2^3 table (unobserved cell = N - n) fitted by statsmodels' Poisson GLM at
    every N of a fine geometric grid, the variance held at 0 where the fit makes it negative, the multinomial
    log-likelihood computed from the fitted means, and the interval read off where it is within chi2(1)/2."""
    import statsmodels.api as sm
    from scipy import stats

    pats = [*counts, "000"]
    pattern = np.array([[int(c) for c in p] for p in pats], dtype=float)
    obs = np.array(list(counts.values()), dtype=float)
    k = pattern.sum(axis=1)
    x = np.column_stack([np.ones(len(pats)), pattern, k**2 / 2])
    grid = np.unique(np.round(np.geomspace(obs.sum() + 1, 50 * obs.sum() * 10, 3000)))
    values = []
    for n_total in grid:
        y = np.append(obs, n_total - obs.sum())
        res = sm.GLM(y, x, family=sm.families.Poisson()).fit(tol=1e-10, maxiter=200)
        if res.params[-1] < 0:
            res = sm.GLM(y, x[:, :-1], family=sm.families.Poisson()).fit(tol=1e-10, maxiter=200)
        assert res.converged
        mu = res.fittedvalues
        values.append(math.lgamma(n_total + 1) - sum(math.lgamma(v + 1) for v in y) + float(y @ np.log(mu / n_total)))
    ll = np.array(values)
    inside = grid[ll >= ll.max() - stats.chi2.ppf(1 - alpha, 1) / 2]
    return float(grid[ll.argmax()]), float(inside.min()), float(inside.max())


def test_three_list_heterogeneity_profile_interval_is_bounded_and_matches_a_brute_force_profile() -> None:
    """Regression (issue 13): this table answered "972.0 to unbounded" (diverged fits near the boundary were
    read as likelihoods). Expected values from a brute-force grid profile, not from the function under test."""
    mle, lo, hi = _brute_force_profile(THREE_LISTS)
    est = loglinear(THREE_LISTS, heterogeneity=True)
    assert est.terms == ("A", "B", "C", "H(Darroch)") and est.observed == 972
    # Hand-derived: the model is saturated on the pattern sizes k = 1, 2, 3, so h = ln(12*300/400) and
    # N = 972 + 300 exp(-b - h/2) with b = ln(20/300) - 1.5 h: 41,472.
    h = math.log(12 * 300 / 20**2)
    assert est.estimate == pytest.approx(972 + 300 * math.exp(-(math.log(20 / 300) - 1.5 * h) - h / 2), rel=1e-6)
    assert est.estimate == pytest.approx(mle, rel=0.005)  # the grid's step is 0.2 %
    assert est.lower == pytest.approx(lo, rel=0.005) and est.upper == pytest.approx(hi, rel=0.005)
    # The "roughly 15,000 to 95,000": we get about 16,200 to 108,000 (see docs/estimation.md).
    assert 14_000 < est.lower < 17_000 and 90_000 < est.upper < 115_000
    assert "left" not in est.interval  # no end left open


def _direct_multinomial_interval(counts: dict[str, int], alpha: float = 0.05) -> tuple[float, float]:
    """(lower, upper) of N for A + B + C + Darroch's k^2/2 by another route than estimation.capture (and than
    ``_brute_force_profile``, which shares its Poisson complete-table device and its clamp): the multinomial
    likelihood of the complete table written with cell probabilities ``softmax(a . x + h k^2/2)``, maximised
    over (a, h) for each N by scipy's L-BFGS-B with the variance bound h >= 0, the ends found by brentq."""
    from scipy import optimize, stats
    from scipy.special import gammaln, logsumexp

    pats = np.array([[int(c) for c in p] for p in [*counts, "000"]], dtype=float)
    obs = np.array(list(counts.values()), dtype=float)
    n, k = obs.sum(), pats.sum(axis=1)
    warm = [np.zeros(4)]  # each maximisation starts from the last one's (a, h)

    def loglik(n_total: float) -> float:
        y = np.append(obs, n_total - n)

        def neg(theta: np.ndarray) -> float:
            eta = pats @ theta[:3] + theta[3] * k**2 / 2
            return -float(gammaln(n_total + 1) - gammaln(y + 1).sum() + (y * (eta - logsumexp(eta))).sum())

        res = optimize.minimize(neg, warm[0], method="L-BFGS-B", bounds=[(None, None)] * 3 + [(0, None)],
                                options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 10_000})
        warm[0] = res.x
        return -float(res.fun)

    grid = np.geomspace(n + 1, 500 * n, 120)
    values = np.array([loglik(v) for v in grid])
    i = int(values.argmax())
    top = optimize.minimize_scalar(lambda v: -loglik(v), bounds=(grid[i - 1], grid[i + 1]), method="bounded")
    cut = -float(top.fun) - stats.chi2.ppf(1 - alpha, 1) / 2
    inside = np.flatnonzero(values >= cut)
    lower = optimize.brentq(lambda v: loglik(v) - cut, grid[inside[0] - 1], grid[inside[0]])
    upper = optimize.brentq(lambda v: loglik(v) - cut, grid[inside[-1]], grid[inside[-1] + 1])
    return lower, upper


def test_three_list_profile_interval_matches_a_direct_multinomial_maximisation() -> None:
    """The profile interval against the multinomial likelihood maximised directly (no Poisson GLM, no refits):
    the two constructions of the same profile likelihood must give the same ends."""
    lower, upper = _direct_multinomial_interval(THREE_LISTS)
    est = loglinear(THREE_LISTS, heterogeneity=True)
    assert est.lower == pytest.approx(lower, rel=1e-4) and est.upper == pytest.approx(upper, rel=1e-4)


def test_profile_refits_cold_when_the_warm_start_diverges(monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm start that does not converge is refitted cold; a fit that never converges leaves the end open
    rather than entering the search as a likelihood (positive control: every fit refused)."""
    good = loglinear(THREE_LISTS, heterogeneity=True)
    real = capture._glm
    calls = {"warm": 0}

    def warm_fails(x, y, start=None):  # type: ignore[no-untyped-def]
        if start is not None and len(y) == 8:  # profile fits (complete table), warm-started
            calls["warm"] += 1
            res = real(x, y, start)
            res.converged = False
            return res
        return real(x, y, start)

    monkeypatch.setattr(capture, "_glm", warm_fails)
    cold = loglinear(THREE_LISTS, heterogeneity=True)
    assert calls["warm"] > 10
    assert (cold.lower, cold.upper) == pytest.approx((good.lower, good.upper), rel=1e-4)

    def positive_loglik(x, y, start=None):  # type: ignore[no-untyped-def]
        res = real(x, y, start)
        if len(y) == 8 and y[-1] < 5000:  # fits below N ~ 6,000 "converge" to means that do not sum to N
            res.fittedvalues = res.fittedvalues * 3
        return res

    monkeypatch.setattr(capture, "_glm", positive_loglik)
    point = capture.profile_loglik(table(THREE_LISTS), [capture.HETEROGENEITY], 1000.0)
    assert point.params is None and math.isnan(point.loglik)  # refused: the "log-likelihood" was positive
    opened = loglinear(THREE_LISTS, heterogeneity=True)
    assert opened.lower == 972 and "lower end left at the observed count" in opened.interval
    assert opened.upper == pytest.approx(good.upper, rel=1e-4)


def test_heterogeneity_needs_a_non_negative_variance() -> None:
    """Fewer on all three lists than independence predicts: the unconstrained Darroch coefficient is negative,
    which describes no population; the term is refused, by the stepwise rule too (its LR test alone would take
    it: deviance 9.3 on 1 df)."""
    tab = table({"100": 100, "010": 100, "001": 100, "110": 30, "101": 30, "011": 30, "111": 1})
    x = capture.design(tab.patterns, [capture.HETEROGENEITY])
    assert capture._glm(x, tab.counts).params[-1] < 0  # the guard is really exercised
    assert fit_model(tab, [capture.HETEROGENEITY]) is None
    assert "H(Darroch)" not in loglinear(tab, heterogeneity=True).terms
    with pytest.raises(ValueError, match="heterogeneity variance is negative"):
        loglinear(tab, "none", heterogeneity=True)


def test_profile_interval_brackets_and_tightens_with_more_data() -> None:
    small = {"100": 30, "010": 20, "001": 25, "110": 10, "101": 12, "011": 8, "111": 4}
    large = {k: 10 * v for k, v in small.items()}
    a, b = loglinear(small, "none"), loglinear(large, "none")
    assert a.lower < a.estimate < a.upper and b.lower < b.estimate < b.upper
    assert b.estimate == pytest.approx(10 * a.estimate, rel=1e-6)  # scale invariance of the MLE
    assert (b.upper - b.lower) / b.estimate < (a.upper - a.lower) / a.estimate


def test_bootstrap_interval_is_seeded_and_brackets() -> None:
    one = loglinear(KOREA, "none", ci="bootstrap", n_boot=150, seed=7)
    two = loglinear(KOREA, "none", ci="bootstrap", n_boot=150, seed=7)
    other = loglinear(KOREA, "none", ci="bootstrap", n_boot=150, seed=8)
    assert (one.lower, one.upper) == (two.lower, two.upper)
    assert (one.lower, one.upper) != (other.lower, other.upper)
    assert one.lower < one.estimate < one.upper


def test_no_information_on_the_unseen_gives_an_unbounded_interval() -> None:
    est = loglinear({"100": 2, "101": 4, "110": 7, "111": 1})
    assert (est.estimate, est.lower, est.upper) == (14.0, 14.0, math.inf)
    assert "holds every observed individual" in est.interval
    apart = loglinear({"001": 1, "010": 2, "100": 1})  # nobody on two lists: the MLE of the unseen is infinite
    assert (apart.estimate, apart.upper) == (4.0, math.inf) and "no overlap" in apart.interval


def test_chapman_formula_variance_and_interval() -> None:
    est = chapman(100, 80, 20)
    assert est.estimate == pytest.approx(101 * 81 / 21 - 1)
    assert est.details["se"] == pytest.approx(math.sqrt(101 * 81 * 80 * 60 / (21**2 * 22)))
    assert est.observed == 160 <= est.lower < est.estimate < est.upper
    with pytest.raises(ValueError):
        chapman(10, 5, 6)


def test_chapman_interval_covers_a_known_population() -> None:
    rng = np.random.default_rng(2024)
    true_n, covered = 500, 0
    for _ in range(200):
        a = rng.random(true_n) < 0.3
        b = rng.random(true_n) < 0.4
        est = capture.estimate(capture.histories_from_sets([set(np.flatnonzero(a)), set(np.flatnonzero(b))]))
        assert est.method == "chapman"
        covered += est.lower <= true_n <= est.upper
    assert covered / 200 >= 0.9


def test_table_inputs_agree_and_bad_inputs_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mapping = {(0, 0, 1): 41, (0, 1, 0): 5, (1, 0, 0): 5, (1, 1, 0): 54, (1, 0, 1): 6, (1, 1, 1): 12}
    strings = {"".join(map(str, k)): v for k, v in mapping.items()}
    path = tmp_path / "korea.csv"
    KOREA.to_csv(path, index=False)
    counts = [table(x).counts for x in (KOREA, mapping, strings)] + [capture.read_histories_csv(str(path)).counts]
    for c in counts[1:]:
        np.testing.assert_array_equal(c, counts[0])
    with pytest.raises(ValueError, match="count"):
        table(KOREA.drop(columns="count"))
    with pytest.raises(ValueError, match="0 and 1"):
        table(KOREA.assign(b=2))
    with pytest.raises(ValueError, match="non-negative"):
        table({"10": -1, "01": 3})


def test_cli_estimate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import typer

    from estimation.cli import estimate

    app = typer.Typer()
    app.command()(estimate)
    app.command("noop")(lambda: None)  # two commands so typer keeps the command name
    path = tmp_path / "korea.csv"
    KOREA.to_csv(path, index=False)
    runner = CliRunner()
    out = runner.invoke(app, ["estimate", "--histories", str(path)])
    assert out.exit_code == 0, out.output
    assert "268.8" in out.output and "b:c" in out.output
    out = runner.invoke(app, ["estimate", "--histories", str(path), "--interactions", "none", "--json"])
    assert out.exit_code == 0 and '"estimate": 141.99' in out.output
    three = tmp_path / "three.csv"
    three.write_text("A,B,C,count\n" + "".join(f"{','.join(k)},{v}\n" for k, v in THREE_LISTS.items()))
    out = runner.invoke(app, ["estimate", "--histories", str(three), "--heterogeneity"])
    assert out.exit_code == 0 and "41,472.0" in out.output and "unbounded" not in out.output, out.output
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,0\n")
    out = runner.invoke(app, ["estimate", "--histories", str(bad)])
    assert out.exit_code == 2 and "count" in out.output
