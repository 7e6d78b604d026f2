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


def test_statsmodels_and_profile_newton_agree() -> None:
    tab = table(KOREA)
    fit = fit_model(tab, [(0, 1)])
    assert fit is not None
    x = capture.design(tab.patterns, fit.pairs)
    mu, converged = capture._poisson_mle(x, tab.counts.copy(), np.zeros(x.shape[1]))
    assert converged
    np.testing.assert_allclose(mu, fit.fitted, rtol=1e-7)


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
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,0\n")
    out = runner.invoke(app, ["estimate", "--histories", str(bad)])
    assert out.exit_code == 2 and "count" in out.output
