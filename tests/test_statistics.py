"""compare() against differences and intervals worked out here by hand, with the statistics module and literal t
quantiles (not scipy, which compare() itself uses)."""

import math
import statistics

import pytest

from drakegpt.statistics import Difference, compare, describe, holm

T_975_2 = 4.302652729749462  # t quantile at 0.975 with 2 dof: (2p − 1)·sqrt(2 / (4p(1 − p))) for p = 0.975
T_95_2 = 2.919985580353726  # at 0.95 with 2 dof, the same formula for p = 0.95


def test_a_paired_difference_worked_out_by_hand():
    baseline = {1: 1.80, 2: 1.82, 3: 1.84}
    variant = {1: 1.85, 2: 1.88, 3: 1.86}
    d = compare(variant, baseline)
    # d_i = 0.05, 0.06, 0.02; mean 0.13 / 3 = 0.043333
    # deviations 0.006667, 0.016667, -0.023333; squares sum to 0.000867; / (n − 1) = 0.000433; sd 0.020817
    # se = 0.020817 / sqrt(3) = 0.012019; half = 4.302653 · 0.012019 = 0.051712
    # interval [0.043333 − 0.051712, 0.043333 + 0.051712] = [-0.008379, 0.095045]: contains 0
    assert (d.method, d.n, d.dof, d.verdict) == ("paired", 3, 2.0, "no effect detected")
    assert d.mean == pytest.approx(0.043333, abs=1e-6)
    assert d.detectable == pytest.approx(0.051712, abs=1e-6)
    assert (d.low, d.high) == (pytest.approx(-0.008379, abs=1e-6), pytest.approx(0.095045, abs=1e-6))

    differences = [0.05, 0.06, 0.02]
    half = T_975_2 * statistics.stdev(differences) / math.sqrt(3)
    assert d.mean == pytest.approx(statistics.fmean(differences), abs=1e-9)
    assert d.detectable == pytest.approx(half, abs=1e-9)
    assert (d.low, d.high) == (pytest.approx(d.mean - half, abs=1e-9), pytest.approx(d.mean + half, abs=1e-9))
    # t = 0.043333 / 0.012019 = 3.605551; with 2 dof P(|T| > t) = 1 − t / sqrt(2 + t²) = 1 − 3.605551 / 3.872983
    assert d.p_value == pytest.approx(1 - 3.605551 / math.sqrt(2 + 3.605551**2), abs=1e-6)
    assert d.p_value == pytest.approx(0.069051, abs=1e-6)  # above 0.05, as the interval holds 0


def test_the_confidence_sets_the_quantile():
    d = compare({1: 1.85, 2: 1.88, 3: 1.86}, {1: 1.80, 2: 1.82, 3: 1.84}, confidence=0.90)
    assert d.detectable == pytest.approx(T_95_2 * statistics.stdev([0.05, 0.06, 0.02]) / math.sqrt(3), abs=1e-9)
    assert d.verdict == "worse"  # the narrower 90% interval [0.0083, 0.0784] leaves 0 out


@pytest.mark.parametrize("sign, verdict", [(1, "worse"), (-1, "better")])
def test_an_interval_clear_of_zero_gives_a_verdict(sign, verdict):
    baseline = {1: 1.80, 2: 1.90, 3: 2.00}
    variant = {seed: loss + sign * shift for (seed, loss), shift in zip(baseline.items(), (0.10, 0.11, 0.12))}
    d = compare(variant, baseline)
    # d = ±(0.10, 0.11, 0.12): mean ±0.11, sd 0.01, half 4.302653 · 0.01 / sqrt(3) = 0.024841
    assert d.verdict == verdict
    assert d.mean == pytest.approx(sign * 0.11, abs=1e-9)
    assert d.detectable == pytest.approx(T_975_2 * 0.01 / math.sqrt(3), abs=1e-9)
    assert (d.low, d.high) == pytest.approx(sorted([sign * 0.11 - 0.024841, sign * 0.11 + 0.024841]), abs=1e-6)


def test_without_shared_seeds_it_is_welch_worked_out_by_hand():
    variant = {1: 2.10, 2: 2.15, 3: 2.12}
    baseline = {4: 1.90, 5: 1.93, 6: 1.95, 7: 1.92}
    d = compare(variant, baseline)
    # means 2.123333 and 1.925: difference 0.198333
    # variances of the means: 0.000633 / 3 = 0.000211 and 0.000433 / 4 = 0.000108; se = sqrt(0.000319) = 0.017873
    # Welch–Satterthwaite: 0.000319² / (0.000211² / 2 + 0.000108² / 3) = 3.895434 dof
    v_var, b_var = statistics.variance(variant.values()) / 3, statistics.variance(baseline.values()) / 4
    dof = (v_var + b_var) ** 2 / (v_var**2 / 2 + b_var**2 / 3)
    half = 2.806086065402885 * math.sqrt(v_var + b_var)  # the t quantile at 0.975 with 3.895434 dof
    assert (d.method, d.n, d.verdict) == ("welch", 7, "worse")
    assert d.dof == pytest.approx(dof, abs=1e-9) and dof == pytest.approx(3.895434, abs=1e-6)
    assert d.mean == pytest.approx(0.198333, abs=1e-6)
    assert d.detectable == pytest.approx(half, abs=1e-9) and half == pytest.approx(0.050153, abs=1e-6)
    assert (d.low, d.high) == (pytest.approx(d.mean - half, abs=1e-9), pytest.approx(d.mean + half, abs=1e-9))


def test_only_shared_seeds_are_paired():
    variant = {1: 1.85, 2: 1.88, 3: 1.86, 4: 9.0}
    baseline = {0: 0.0, 1: 1.80, 2: 1.82, 3: 1.84}
    assert compare(variant, baseline) == compare({1: 1.85, 2: 1.88, 3: 1.86}, {1: 1.80, 2: 1.82, 3: 1.84})
    assert compare(variant, baseline).n == 3


def test_nan_losses_are_left_out():
    clean = compare({1: 1.85, 2: 1.88, 3: 1.86}, {1: 1.80, 2: 1.82, 3: 1.84})
    assert compare({1: 1.85, 2: 1.88, 3: 1.86, 4: 1.0}, {1: 1.80, 2: 1.82, 3: 1.84, 4: math.nan}) == clean
    # seed 2 lost on one side leaves seed 1 the only shared one: nothing to pair, so Welch over all the values
    d = compare({1: 1.85, 2: math.nan, 4: 1.87, 5: 1.90}, {1: 1.80, 2: 1.82, 3: 1.84})
    assert (d.method, d.n) == ("welch", 6)
    assert d.mean == pytest.approx(statistics.fmean([1.85, 1.87, 1.90]) - statistics.fmean([1.80, 1.82, 1.84]))


@pytest.mark.parametrize(
    "variant, baseline, mean, n",
    [
        ({1: 2.0}, {1: 1.9}, 0.1, 2),
        ({1: 2.0, 2: 2.1}, {3: 1.9}, 0.15, 3),  # two variant seeds, but one baseline value: no Welch either
        ({1: 2.0, 2: 2.1}, {1: math.nan}, math.nan, 2),
    ],
)
def test_too_few_seeds_give_a_mean_alone(variant, baseline, mean, n):
    d = compare(variant, baseline)
    assert (d.method, d.n, d.verdict) == ("", n, "too few seeds")
    assert d.mean == pytest.approx(mean, nan_ok=True)
    assert all(math.isnan(x) for x in (d.low, d.high, d.detectable, d.dof))


@pytest.mark.parametrize("shift, verdict", [(0.25, "worse"), (-0.25, "better"), (0.0, "no effect detected")])
def test_equal_paired_differences_give_a_zero_width_interval(shift, verdict):
    baseline = {1: 1.0, 2: 1.5, 3: 2.0}  # exact in binary, so every difference is exactly `shift`
    d = compare({seed: loss + shift for seed, loss in baseline.items()}, baseline)
    assert (d.mean, d.low, d.high, d.detectable, d.verdict) == (shift, shift, shift, 0.0, verdict)
    assert d.p_value == (1.0 if shift == 0 else 0.0)


def test_describe():
    worse = Difference(0.056, 0.041, 0.071, 0.015, "paired", 3, 2.0, "worse", 0.01)
    assert describe(worse) == "+0.056 [+0.041, +0.071]"
    no_effect = Difference(-0.003, -0.012, 0.006, 0.009, "paired", 3, 2.0, "no effect detected", 0.3)
    assert describe(no_effect) == "-0.003 [-0.012, +0.006]"
    assert describe(no_effect, digits=2) == "-0.00 [-0.01, +0.01]"
    nan = math.nan
    assert describe(Difference(0.012, nan, nan, nan, "", 2, nan, "too few seeds", nan)) == "+0.012"
    assert describe(Difference(nan, nan, nan, nan, "", 1, nan, "too few seeds", nan)) == "n/a"
    assert math.isnan(compare({1: 2.0}, {1: 1.9}).p_value)


def test_two_shared_seeds_are_enough_to_pair_and_two_a_side_for_welch():
    paired = compare({1: 2.0, 2: 2.1}, {1: 1.9, 2: 2.05})
    assert paired.method == "paired" and paired.n == 2 and paired.dof == 1
    welch = compare({1: 2.0, 2: 2.1}, {3: 1.9, 4: 2.05})
    assert welch.method == "welch" and welch.n == 4
    assert compare({1: 2.0, 2: 2.1}, {3: 1.9}).verdict == "too few seeds"


def test_welch_with_two_constant_sides_has_a_zero_width_interval_and_the_pooled_dof():
    d = compare({1: 2.0, 2: 2.0, 3: 2.0}, {4: 1.0, 5: 1.0})
    assert (d.low, d.high, d.dof, d.verdict) == (1.0, 1.0, 3, "worse")


@pytest.mark.parametrize("p_values, holds", [
    ([0.01, 0.02, 0.04], [True, True, True]),  # 0.01 <= 0.05/3, 0.02 <= 0.05/2, 0.04 <= 0.05
    ([0.02, 0.03, 0.04], [False, False, False]),  # each decided alone, none for the three: 0.02 > 0.05/3
    ([0.04, 0.01, math.nan, 0.03], [False, True, False, False]),  # 3 tests: 0.01 holds, 0.03 > 0.05/2 stops
    ([0.001, 0.2, 0.03], [True, False, False]),  # a step-down: 0.03 > 0.05/2 stops before 0.2 is tried
    ([], []),
])
def test_holm_keeps_what_holds_for_the_family(p_values, holds):
    assert holm(p_values) == holds


def test_holm_at_another_level():
    assert holm([0.015, 0.04], alpha=0.1) == [True, True]  # 0.015 <= 0.1/2, 0.04 <= 0.1
    assert holm([0.015, 0.04]) == [True, True]
    assert holm([0.03, 0.04]) == [False, False]
