"""Tests for nestspk.metrics against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from nestspk.metrics import actual_dcf, compute_eer, compute_min_dcf, det_curve


def _gaussian_trials(seed: int, n: int = 2000, d_prime: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    scores = rng.standard_normal(n) + d_prime * labels
    return scores, labels


def _sklearn_eer(scores: np.ndarray, labels: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def _brute_min_dcf(scores, labels, p_target, c_miss, c_fa) -> float:
    labels = np.asarray(labels).astype(bool)
    best = np.inf
    for t in list(np.unique(scores)) + [np.inf]:
        acc = scores >= t
        fnr = np.mean(~acc[labels])
        fpr = np.mean(acc[~labels])
        best = min(best, c_miss * p_target * fnr + c_fa * (1 - p_target) * fpr)
    return best / min(c_miss * p_target, c_fa * (1 - p_target))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eer_matches_sklearn(seed: int) -> None:
    scores, labels = _gaussian_trials(seed)
    eer, thr = compute_eer(scores, labels)
    assert abs(eer - _sklearn_eer(scores, labels)) < 1e-3
    # at the threshold, the two error rates are close to the EER
    acc = scores >= thr
    fnr = np.mean(~acc[labels == 1])
    fpr = np.mean(acc[labels == 0])
    assert abs(fnr - eer) < 5e-3 and abs(fpr - eer) < 5e-3


def test_eer_with_ties_and_rounding() -> None:
    scores, labels = _gaussian_trials(3)
    scores = np.round(scores, 1)  # many ties
    eer, _ = compute_eer(scores, labels)
    assert abs(eer - _sklearn_eer(scores, labels)) < 2e-2
    assert 0.0 < eer < 0.5


@pytest.mark.parametrize(
    "p_target,c_miss,c_fa", [(0.01, 1.0, 1.0), (0.05, 1.0, 1.0), (0.5, 10.0, 1.0), (0.001, 1.0, 3.0)]
)
def test_min_dcf_matches_brute_force(p_target: float, c_miss: float, c_fa: float) -> None:
    scores, labels = _gaussian_trials(4)
    got, thr = compute_min_dcf(scores, labels, p_target, c_miss, c_fa)
    want = _brute_min_dcf(scores, labels, p_target, c_miss, c_fa)
    assert abs(got - want) < 1e-9
    assert abs(actual_dcf(scores, labels, thr, p_target, c_miss, c_fa) - got) < 1e-9


def test_min_dcf_at_most_one() -> None:
    scores, labels = _gaussian_trials(5, d_prime=0.0)
    got, _ = compute_min_dcf(scores, labels, 0.01)
    assert 0.0 <= got <= 1.0 + 1e-12


def test_perfect_and_reversed_separation() -> None:
    labels = np.r_[np.ones(50, int), np.zeros(80, int)]
    scores = np.r_[np.linspace(1, 2, 50), np.linspace(-2, 0.5, 80)]
    eer, thr = compute_eer(scores, labels)
    assert eer == 0.0
    assert 0.5 < thr <= 1.0
    assert compute_min_dcf(scores, labels)[0] == 0.0
    eer_rev, _ = compute_eer(-scores, labels)
    assert eer_rev > 0.99


def test_det_curve_against_sklearn() -> None:
    scores, labels = _gaussian_trials(6, n=500)
    fpr, fnr, thr = det_curve(scores, labels)
    assert np.all(np.diff(thr) < 0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(fnr) <= 0)
    sk_fpr, sk_tpr, sk_thr = roc_curve(labels, scores, drop_intermediate=False)
    # sklearn prepends an +inf threshold
    np.testing.assert_allclose(thr, sk_thr[1:])
    np.testing.assert_allclose(fpr, sk_fpr[1:])
    np.testing.assert_allclose(fnr, 1 - sk_tpr[1:])


def test_actual_dcf_extremes() -> None:
    labels = np.array([1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.2, 0.8, 0.1, 0.0])
    # accept everything: FNR=0, FPR=1 -> (1-p)/p
    assert actual_dcf(scores, labels, -np.inf, 0.5) == pytest.approx(1.0)
    assert actual_dcf(scores, labels, -np.inf, 0.01) == pytest.approx(0.99 / 0.01)
    # reject everything: FNR=1 -> 1 (normalised) when p * c_miss is the smaller cost
    assert actual_dcf(scores, labels, np.inf, 0.01) == pytest.approx(1.0)
    # threshold 0.5: miss 1/2, fa 1/3
    assert actual_dcf(scores, labels, 0.5, 0.5) == pytest.approx(0.5 + 1 / 3)


@pytest.mark.parametrize(
    "scores,labels,match",
    [
        ([0.1, 0.2], [1], "length mismatch"),
        ([0.1, np.nan, 0.3], [1, 0, 0], "NaN"),
        ([0.1, 0.2, 0.3], [1, 0, 2], "labels"),
        ([0.1, 0.2, 0.3], [1, 0, -1], "labels"),
        ([0.1, 0.2], [0, 0], "no target"),
        ([0.1, 0.2], [1, 1], "no non-target"),
        ([], [], "no target"),
    ],
)
def test_validation_errors(scores, labels, match: str) -> None:
    for fn in (compute_eer, compute_min_dcf, det_curve):
        with pytest.raises(ValueError, match=match):
            fn(np.asarray(scores, dtype=float), np.asarray(labels))
    with pytest.raises(ValueError, match=match):
        actual_dcf(np.asarray(scores, dtype=float), np.asarray(labels), 0.0, 0.01)


def test_bad_costs() -> None:
    scores, labels = _gaussian_trials(7, n=100)
    with pytest.raises(ValueError, match="p_target"):
        compute_min_dcf(scores, labels, p_target=0.0)
    with pytest.raises(ValueError, match="c_miss"):
        compute_min_dcf(scores, labels, c_miss=-1.0)
    with pytest.raises(ValueError, match="p_target"):
        actual_dcf(scores, labels, 0.0, p_target=1.5)


def test_boolean_labels_accepted() -> None:
    scores, labels = _gaussian_trials(8, n=300)
    assert compute_eer(scores, labels.astype(bool)) == compute_eer(scores, labels)
