"""Is a variant better than its baseline? A difference in loss with its confidence interval, and the verdict it gives.

Paired, where it can be: a variant runs the same seeds as its baseline, and a seed fixes the initial weights, the
batches and the evaluation windows, so one seed's variant and baseline share that seed's luck. The per-seed
differences cancel it, and what is left varies far less than either side's losses do across seeds. Where the two
sides share fewer than two seeds there is nothing to pair, and Welch's interval compares the two means instead.

The interval's half-width uses the t distribution, not 2 (the normal's 1.96): with a handful of seeds the sample
standard deviation is itself uncertain, and with 3 seeds the 95% critical value is 4.30, more than twice 1.96.
"""

import math
import statistics
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence


@dataclass(frozen=True)
class Difference:
    mean: float  # variant − baseline (nats); NaN when either side has no values
    low: float  # the confidence interval of the difference; NaN without one
    high: float
    detectable: float  # half the interval's width: the smallest |difference| this comparison would call an effect
    method: str  # "paired" (seeds shared by both sides), "welch" (no two shared seeds), "" (too few seeds)
    n: int  # paired: the shared seeds; welch: n_variant + n_baseline; else the values there are
    dof: float  # degrees of freedom of the t quantile; NaN without an interval
    verdict: str  # "better" | "worse" | "no effect detected" | "too few seeds"
    p_value: float  # two-sided, of a difference this far from 0 if there were none; NaN without an interval


def compare(variant: Mapping[int, float], baseline: Mapping[int, float], confidence: float = 0.95) -> Difference:
    """variant − baseline for seed -> loss mappings (lower is better), NaN losses left out."""
    variant, baseline = _values(variant), _values(baseline)
    shared = sorted(variant.keys() & baseline.keys())
    if len(shared) >= 2:
        return _paired([variant[seed] - baseline[seed] for seed in shared], confidence)
    if len(variant) >= 2 and len(baseline) >= 2:
        return _welch(list(variant.values()), list(baseline.values()), confidence)
    mean = _mean(variant) - _mean(baseline)
    return Difference(mean, math.nan, math.nan, math.nan, "", len(variant) + len(baseline), math.nan, "too few seeds",
                      math.nan)


def describe(d: Difference, digits: int = 3) -> str:
    """'+0.056 [+0.041, +0.071]'; the mean alone without an interval; 'n/a' without a mean."""
    if math.isnan(d.mean):
        return "n/a"
    text = f"{d.mean:+.{digits}f}"
    return text if math.isnan(d.low) else f"{text} [{d.low:+.{digits}f}, {d.high:+.{digits}f}]"


def _values(losses: Mapping[int, float]) -> Dict[int, float]:
    return {seed: float(loss) for seed, loss in losses.items() if not math.isnan(loss)}


def _mean(losses: Dict[int, float]) -> float:
    return statistics.fmean(losses.values()) if losses else math.nan


def _paired(differences: List[float], confidence: float) -> Difference:
    n = len(differences)
    standard_error = statistics.stdev(differences) / math.sqrt(n)
    return _interval(statistics.fmean(differences), standard_error, n - 1, "paired", n, confidence)


def _welch(variant: List[float], baseline: List[float], confidence: float) -> Difference:
    """Welch's interval: each side's variance of the mean kept apart, with Welch–Satterthwaite degrees of freedom."""
    v_variance = statistics.variance(variant) / len(variant)
    b_variance = statistics.variance(baseline) / len(baseline)
    spread = v_variance**2 / (len(variant) - 1) + b_variance**2 / (len(baseline) - 1)
    # Both sides constant: the formula is 0/0, and the interval has width 0 whatever the dof; take the pooled count.
    dof = (v_variance + b_variance) ** 2 / spread if spread else len(variant) + len(baseline) - 2
    mean = statistics.fmean(variant) - statistics.fmean(baseline)
    n = len(variant) + len(baseline)
    return _interval(mean, math.sqrt(v_variance + b_variance), dof, "welch", n, confidence)


def _interval(mean: float, standard_error: float, dof: float, method: str, n: int, confidence: float) -> Difference:
    from scipy import stats  # half a second to import: only a report with variants needs it

    half = float(stats.t.ppf((1 + confidence) / 2, dof)) * standard_error
    low, high = mean - half, mean + half
    # A standard error of 0 (every paired difference equal) gives [mean, mean]: the sign of the mean decides.
    verdict = "better" if high < 0 else "worse" if low > 0 else "no effect detected"
    if standard_error:
        p_value = float(2 * stats.t.sf(abs(mean) / standard_error, dof))
    else:
        p_value = 1.0 if mean == 0 else 0.0
    return Difference(mean, low, high, half, method, n, float(dof), verdict, p_value)


def holm(p_values: Sequence[float], alpha: float = 0.05) -> List[bool]:
    """Which of a family of tests keep their verdict when all are read at once, at family-wise level alpha.

    Seven variants each tested at 5% call one of them an effect by chance about three times in ten when none has
    any. Holm's step-down rule keeps that chance under alpha for the family: the k-th smallest of m p-values holds
    while it is at most alpha / (m − k + 1), and the first that fails stops it. NaN p-values are not tests."""
    tests = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    holds = [False] * len(p_values)
    for k, (p, i) in enumerate(tests):
        if p > alpha / (len(tests) - k):
            break
        holds[i] = True
    return holds
