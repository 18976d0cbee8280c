"""Split-conformal ZFN thresholds and their statement of risk.

The shipped threshold is read off abnormal *calibration* images: images that the scoring model,
its hyper-parameter search and the choice of classifier never saw, scored by that very model.
With ``n`` such scores, the threshold is the ``k``-th lowest of them (``k = 1``: the minimum, the
paper's ZFN rule), minus an optional ``margin``. A new abnormal image is missed when its score is
strictly below the threshold (``score >= threshold`` is flagged).

What this guarantees, assuming the score of a new defect is *exchangeable* with the calibration
scores (same defect population, same capture, same model, calibration images drawn like the new
ones):

- **Expected miss rate** (marginal, over the draw of the calibration set): the probability that a
  new defect is missed is at most ``k / (n + 1)``.
- **Confidence bound** (training-conditional, for *this* calibration set): the miss rate
  ``F(t)`` of new defects at the shipped threshold ``t`` follows (is stochastically at most) a
  ``Beta(k, n - k + 1)`` distribution, so with probability ``confidence`` over calibration sets
  it is at most ``beta.ppf(confidence, k, n - k + 1)``. That is the one-sided Clopper-Pearson
  upper bound for ``k - 1`` misses among ``n`` calibration defects; for ``k = 1`` it is
  ``1 - (1 - confidence) ** (1 / n)``.

A margin only lowers the threshold, so both statements still hold. Neither says anything about
defect types that are absent from the calibration images.

Threshold rules (``rule``):

- ``"lowest_abnormal"`` (the paper's ZFN rule): the ``k``-th lowest abnormal calibration score.
  Normal calibration images play no part.
- ``"gap"`` (default): the same, lowered to just above the highest *normal* calibration score
  when that is lower, i.e. (at k = 1) when the calibration part separates the classes. Any
  threshold in the gap flags every abnormal and no normal calibration image; the bottom of the
  gap is the one that lets the fewest new defects through, which is what a zero-miss line
  wants. Being lower, it keeps both statements above. Its price in false alarms: a new normal
  image flagged by it and not by the abnormal rule scores above all ``m`` normal calibration
  scores, which, if its score is exchangeable with theirs, happens with probability at most
  ``1 / (m + 1)`` averaged over calibration sets. That bound is on the *increase* and
  unconditional: given that the rule did lower the threshold (the normal calibration scores came
  out low), the chance of an alarm can be larger (vqganodip_pipeline_tests/scoring/
  test_conformal.py shows such a case).
  ``bench/bench_choice.py`` reports every combination rule at both threshold rules on the same
  folds (figures in bench/README.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import beta, binom

from vqganodip_pipeline.scoring.thresholds import check_scores

DEFAULT_CONFIDENCE = 0.95
THRESHOLD_RULES = ("gap", "lowest_abnormal")
DEFAULT_RULE = "gap"
ASSUMPTION = (
    "new defects' scores are exchangeable with the calibration defects' scores (same defect "
    "population, capture and model; calibration images unseen by the model, its search and "
    "its classifier choice)"
)


def _check_order(k: int, n: int) -> None:
    if int(n) != n or n < 0:
        raise ValueError(f"n (abnormal calibration images) must be an integer >= 0, got {n}")
    if int(k) != k or not 1 <= k <= max(n, 1):
        raise ValueError(f"k must be an integer in [1, n] = [1, {n}], got {k}")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def miss_rate_upper_bound(k: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """One-sided upper confidence bound on the miss rate of new defects when the threshold is
    the ``k``-th lowest of ``n`` exchangeable abnormal calibration scores.

    ``beta.ppf(confidence, k, n - k + 1)`` (Clopper-Pearson for ``k - 1`` misses of ``n``);
    1.0 when ``n = 0`` (nothing is known).
    """
    _check_order(k, n)
    _check_confidence(confidence)
    if n == 0:
        return 1.0
    return float(beta.ppf(confidence, k, n - k + 1))


def expected_miss_rate(k: int, n: int) -> float:
    """Upper bound ``k / (n + 1)`` on the expected (over calibration sets) miss probability of
    a new exchangeable defect; 1.0 when ``n = 0``."""
    _check_order(k, n)
    return 1.0 if n == 0 else k / (n + 1)


def holdout_p_value(missed: int, n: int, miss_rate: float) -> float:
    """How surprising ``missed`` misses among ``n`` new defects are if the true miss rate were
    ``miss_rate`` (e.g. the stated upper bound): ``P(X >= missed)`` for ``X ~ Binomial(n,
    miss_rate)``, the one-sided binomial test. A small value is evidence that the real miss
    rate exceeds ``miss_rate``; zero misses give 1."""
    if n < 0 or not 0 <= missed <= n:
        raise ValueError(f"need 0 <= missed <= n, got missed={missed}, n={n}")
    if not 0.0 <= miss_rate <= 1.0:
        raise ValueError(f"miss_rate must be in [0, 1], got {miss_rate}")
    return float(binom.sf(missed - 1, n, miss_rate)) if missed else 1.0


def order_for_target(
    n: int, target_miss_rate: float, confidence: float = DEFAULT_CONFIDENCE
) -> int | None:
    """The largest ``k`` whose confidence bound is at most ``target_miss_rate`` (the highest
    threshold, so the fewest false alarms, that still certifies the target), or None when even
    the minimum (``k = 1``) cannot certify it with ``n`` calibration defects."""
    if not 0.0 < target_miss_rate < 1.0:
        raise ValueError(f"target_miss_rate must be in (0, 1), got {target_miss_rate}")
    _check_confidence(confidence)
    best = None
    for k in range(1, n + 1):
        if miss_rate_upper_bound(k, n, confidence) <= target_miss_rate:
            best = k
        else:
            break  # the bound grows with k
    return best


@dataclass(frozen=True)
class RiskStatement:
    """What a split-conformal ZFN threshold guarantees, in numbers and in words.

    n_calibration: abnormal calibration images (unseen by the model) the threshold is read off;
    k: the order statistic used (1 = their minimum); n_below: how many of them score strictly
    below the shipped threshold (``k - 1`` at most; fewer with a margin, ties or the gap rule);
    confidence, miss_rate_upper_bound: the Clopper-Pearson/beta bound; expected_miss_rate:
    ``k / (n + 1)``; target_miss_rate / target_met: the requested target, if any, and whether
    the bound certifies it; assumption: the condition both statements rest on; rule: the
    threshold rule; n_normal_calibration: m, normal calibration images; lowered_to_normals: the
    gap rule put the threshold just above the highest normal calibration score;
    false_alarm_increase_bound: with the gap rule, no margin and m >= 1, ``1 / (m + 1)``: how
    much the rule raises a new normal image's chance of an alarm over the abnormal rule, at
    most, averaged over calibration sets (else None).
    """

    threshold: float
    n_calibration: int
    k: int
    n_below: int
    margin: float
    confidence: float
    miss_rate_upper_bound: float
    expected_miss_rate: float
    target_miss_rate: float | None
    target_met: bool | None
    assumption: str = ASSUMPTION
    rule: str = "lowest_abnormal"
    n_normal_calibration: int = 0
    lowered_to_normals: bool = False
    false_alarm_increase_bound: float | None = None

    def sentence(self) -> str:
        """The statement a report, a log line or asset metadata prints."""
        which = "lowest" if self.k == 1 else f"{_ordinal(self.k)} lowest"
        margin = f" minus a margin of {self.margin:g}" if self.margin else ""
        if self.lowered_to_normals:
            source = (
                f"just above the highest score of {self.n_normal_calibration} normal "
                f"calibration images, below the {which} score of {self.n_calibration} abnormal "
                f"ones (the bottom of the gap between them){margin}"
            )
        else:
            source = f"the {which} score of {self.n_calibration} abnormal calibration images"
            source += margin
        text = (
            f"Threshold {self.threshold:.4g} = {source}; {self.n_below} of the abnormal ones "
            f"fall below it. Assuming {self.assumption}: with {self.confidence:.0%} confidence "
            f"the miss rate of new defects is at most {self.miss_rate_upper_bound:.1%} "
            f"(one-sided Clopper-Pearson bound), and averaged over calibration sets a new defect "
            f"is missed with probability at most {self.expected_miss_rate:.1%} (k/(n+1))."
        )
        if self.false_alarm_increase_bound is not None:
            text += (
                " Assuming also that new normal images' scores are exchangeable with those of "
                f"the {self.n_normal_calibration} normal calibration images: averaged over "
                "calibration sets, the gap rule (which, when every normal calibration score "
                "lies below the paper's threshold, lowers it to the top of the normal scores) "
                "raises their chance of an alarm by at most "
                f"{self.false_alarm_increase_bound:.1%} (1/(m+1)) over the paper's rule."
            )
        text += " Defect types absent from the calibration images are not covered."
        if self.target_miss_rate is not None and not self.target_met:
            text += (
                f" The requested target miss rate {self.target_miss_rate:.1%} cannot be "
                f"certified with {self.n_calibration} calibration defects: the minimum is used."
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "statement": self.sentence()}


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def conformal_threshold(
    scores: object,
    y: object,
    *,
    k: int = 1,
    margin: float = 0.0,
    target_miss_rate: float | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    rule: str = DEFAULT_RULE,
) -> RiskStatement:
    """ZFN threshold from the calibration scores of ``(scores, y)`` and its risk.

    ``target_miss_rate`` (if given) replaces ``k`` by :func:`order_for_target` (``k = 1`` with
    ``target_met=False`` when the target cannot be certified). ``rule`` (module docstring):
    ``"lowest_abnormal"`` reads the threshold off the abnormal calibration scores only;
    ``"gap"`` then lowers it to just above the highest normal calibration score when that is
    lower. ``margin`` is subtracted last. Raises ``ValueError`` when there is no abnormal
    calibration image.
    """
    s, labels = check_scores(scores, y)
    if margin < 0 or not np.isfinite(margin):
        raise ValueError(f"margin must be a finite value >= 0, got {margin}")
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"rule must be one of {THRESHOLD_RULES}, got {rule!r}")
    abnormal = np.sort(s[labels == 1])
    normal = s[labels == 0]
    n = len(abnormal)
    if n == 0:
        raise ValueError("a conformal ZFN threshold needs at least one abnormal calibration image")
    target_met: bool | None = None
    if target_miss_rate is not None:
        chosen = order_for_target(n, target_miss_rate, confidence)
        target_met = chosen is not None
        k = chosen or 1
    _check_order(k, n)
    threshold = float(abnormal[k - 1])
    lowered = False
    if rule == "gap" and len(normal):
        # the lowest threshold that flags no normal calibration image (score >= t flags)
        above_normals = float(np.nextafter(normal.max(), np.inf))
        if above_normals < threshold:
            threshold, lowered = above_normals, True
    threshold -= margin
    return RiskStatement(
        threshold=threshold,
        n_calibration=n,
        k=int(k),
        n_below=int((abnormal < threshold).sum()),
        margin=float(margin),
        confidence=float(confidence),
        miss_rate_upper_bound=miss_rate_upper_bound(k, n, confidence),
        expected_miss_rate=expected_miss_rate(k, n),
        target_miss_rate=target_miss_rate,
        target_met=target_met,
        rule=rule,
        n_normal_calibration=len(normal),
        lowered_to_normals=lowered,
        # unconditional: printed whether or not this calibration set lowered the threshold
        false_alarm_increase_bound=(
            1.0 / (len(normal) + 1) if rule == "gap" and len(normal) and not margin else None
        ),
    )
