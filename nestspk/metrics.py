"""Speaker-verification metrics: EER, minDCF, actual DCF and DET curve (numpy only).

Conventions: ``labels`` are 1 for target (same-speaker) trials and 0 for
non-target trials; a trial is accepted when ``score >= threshold``. Rates are
fractions in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["compute_eer", "compute_min_dcf", "det_curve", "actual_dcf"]


def _validate(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(scores float64 (n,), labels bool (n,))``; ValueError on bad input."""
    s = np.asarray(scores)
    y = np.asarray(labels)
    if s.ndim != 1 or y.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D; got shapes {s.shape} and {y.shape}")
    if s.shape[0] != y.shape[0]:
        raise ValueError(f"length mismatch: {s.shape[0]} scores vs {y.shape[0]} labels")
    if s.dtype.kind not in "biuf":
        raise ValueError(f"scores must be real numbers; got dtype {s.dtype}")
    s = s.astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"labels must be 0/1; got dtype {y.dtype}")
    if not np.all((y == 0) | (y == 1)):
        bad = np.unique(y[~((y == 0) | (y == 1))])[:5]
        raise ValueError(f"labels must be 0 (non-target) or 1 (target); got {bad.tolist()}")
    y = y == 1
    n_tar = int(y.sum())
    if n_tar == 0:
        raise ValueError("no target trials (label 1)")
    if n_tar == y.shape[0]:
        raise ValueError("no non-target trials (label 0)")
    return s, y


def _rates(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FPR, FNR at every unique threshold (decreasing), accepting ``score >= threshold``."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    n_tar = int(y.sum())
    n_non = y.shape[0] - n_tar
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    # last index of each run of equal scores: everything >= that score is accepted
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.shape[0] - 1]
    thresholds = s_sorted[last]
    fpr = fp[last] / n_non
    fnr = 1.0 - tp[last] / n_tar
    return fpr, fnr, thresholds


def det_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DET curve over all unique scores.

    Returns:
        ``(fpr, fnr, thresholds)``, each ``(k,)`` float64 with ``k`` unique scores;
        thresholds strictly decreasing, rates for accepting ``score >= threshold``.
    """
    s, y = _validate(scores, labels)
    return _rates(s, y)


def _reject_all_threshold(thresholds: np.ndarray) -> float:
    """Smallest float above the highest score: accepting ``>=`` it rejects every trial."""
    return float(np.nextafter(thresholds[0], np.inf))


def compute_eer(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """Equal error rate.

    The ROC over all unique thresholds (plus the reject-all point) is linearly
    interpolated between the two consecutive points where FNR - FPR changes sign.

    Returns:
        ``(eer, threshold)``: EER as a fraction in [0, 1] and the score threshold at
        the crossing (interpolated between the two bracketing thresholds).
    """
    s, y = _validate(scores, labels)
    fpr, fnr, thr = _rates(s, y)
    fpr = np.r_[0.0, fpr]
    fnr = np.r_[1.0, fnr]
    thr = np.r_[_reject_all_threshold(thr), thr]
    diff = fnr - fpr  # starts at 1, non-increasing, ends at -1 (fnr=0, fpr=1)
    i = int(np.argmax(diff <= 0))
    d0, d1 = diff[i - 1], diff[i]
    a = d0 / (d0 - d1)  # d0 > 0 >= d1
    eer = fpr[i - 1] + a * (fpr[i] - fpr[i - 1])
    threshold = thr[i - 1] + a * (thr[i] - thr[i - 1])
    return float(eer), float(threshold)


def _check_costs(p_target: float, c_miss: float, c_fa: float) -> None:
    if not (0.0 < p_target < 1.0):
        raise ValueError(f"p_target must be in (0, 1); got {p_target}")
    if not (c_miss > 0 and c_fa > 0 and math.isfinite(c_miss) and math.isfinite(c_fa)):
        raise ValueError(f"c_miss and c_fa must be positive; got {c_miss}, {c_fa}")


def compute_min_dcf(
    scores: ArrayLike,
    labels: ArrayLike,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> tuple[float, float]:
    """Normalised minimum detection cost.

    ``DCF(t) = c_miss * p_target * FNR(t) + c_fa * (1 - p_target) * FPR(t)``, divided by
    ``min(c_miss * p_target, c_fa * (1 - p_target))``, minimised over every unique
    score threshold and the reject-all threshold.

    Returns:
        ``(min_dcf, threshold)``; accept trials with ``score >= threshold``.
    """
    _check_costs(p_target, c_miss, c_fa)
    s, y = _validate(scores, labels)
    fpr, fnr, thr = _rates(s, y)
    fpr = np.r_[0.0, fpr]
    fnr = np.r_[1.0, fnr]
    thr = np.r_[_reject_all_threshold(thr), thr]
    dcf = c_miss * p_target * fnr + c_fa * (1.0 - p_target) * fpr
    norm = min(c_miss * p_target, c_fa * (1.0 - p_target))
    i = int(np.argmin(dcf))
    return float(dcf[i] / norm), float(thr[i])


def actual_dcf(
    scores: ArrayLike,
    labels: ArrayLike,
    threshold: float,
    p_target: float,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Normalised detection cost at a fixed ``threshold`` (accept ``score >= threshold``)."""
    _check_costs(p_target, c_miss, c_fa)
    s, y = _validate(scores, labels)
    if math.isnan(threshold):
        raise ValueError("threshold is NaN")
    accept = s >= threshold
    fnr = float(np.mean(~accept[y]))
    fpr = float(np.mean(accept[~y]))
    dcf = c_miss * p_target * fnr + c_fa * (1.0 - p_target) * fpr
    return dcf / min(c_miss * p_target, c_fa * (1.0 - p_target))
