"""Tests for nestspk.scoring (AS-norm, cohort, calibration) and nestspk.report."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_curve

from nestspk.errors import WeightsError
from nestspk.report import probit, write_report
from nestspk.scoring import (
    Cohort,
    asnorm,
    cosine_scores,
    fit_calibration,
    llr_to_probability,
    threshold_for,
)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _naive_asnorm(s: float, e: np.ndarray, t: np.ndarray, cohort: np.ndarray, k: int) -> float:
    ce = sorted((float(np.dot(e, c)) for c in cohort), reverse=True)[:k]
    ct = sorted((float(np.dot(t, c)) for c in cohort), reverse=True)[:k]
    mu_e, sd_e = sum(ce) / len(ce), math.sqrt(sum((v - sum(ce) / len(ce)) ** 2 for v in ce) / len(ce))
    mu_t, sd_t = sum(ct) / len(ct), math.sqrt(sum((v - sum(ct) / len(ct)) ** 2 for v in ct) / len(ct))
    return 0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)


def _gaussian_trials(seed: int, n: int = 3000, d_prime: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    scores = 0.1 * rng.standard_normal(n) + 0.2 + 0.1 * d_prime * labels
    return scores, labels


# --------------------------------------------------------------------------- AS-norm


@pytest.mark.parametrize("top_k", [1, 7, 40, 1000])
def test_asnorm_matches_naive_loop(top_k: int) -> None:
    rng = np.random.default_rng(0)
    n, d, N = 60, 16, 40
    e, t, cohort = _unit(rng, n, d), _unit(rng, n, d), _unit(rng, N, d)
    s = cosine_scores(e, t)
    got = asnorm(s, e, t, cohort, top_k=top_k)
    if top_k == 1:  # sd of one value is 0: floored, just check the means are used
        assert np.all(np.isfinite(got))
        return
    want = np.array([_naive_asnorm(s[i], e[i], t[i], cohort, top_k) for i in range(n)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(Cohort(cohort, top_k=top_k).normalize(s, e, t), got, rtol=1e-6)


def test_asnorm_is_symmetric_and_checks_shapes() -> None:
    rng = np.random.default_rng(1)
    e, t, c = _unit(rng, 10, 8), _unit(rng, 10, 8), _unit(rng, 30, 8)
    s = cosine_scores(e, t)
    np.testing.assert_allclose(asnorm(s, e, t, c, 10), asnorm(s, t, e, c, 10))
    with pytest.raises(ValueError, match="dimension"):
        asnorm(s, e[:, :4], t, c, 10)
    with pytest.raises(ValueError, match="length mismatch"):
        asnorm(s[:5], e, t, c, 10)
    with pytest.raises(ValueError, match="top_k"):
        asnorm(s, e, t, c, 0)


def test_cosine_scores_row_wise() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    want = [np.dot(a[i], b[i]) / np.linalg.norm(a[i]) / np.linalg.norm(b[i]) for i in range(5)]
    np.testing.assert_allclose(cosine_scores(a, b), want)


# --------------------------------------------------------------------------- cohort validation


def test_cohort_validation_errors(tmp_path) -> None:
    rng = np.random.default_rng(3)
    good = _unit(rng, 20, 8)
    bad = good.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Cohort(bad)
    with pytest.raises(ValueError, match="dimension 8, expected 16"):
        Cohort(good, dim=16)
    with pytest.raises(ValueError, match="2-D"):
        Cohort(good[0])
    with pytest.raises(ValueError, match="L2-normalised"):
        Cohort(good * 2)
    with pytest.raises(ValueError, match="empty"):
        Cohort(np.zeros((0, 8), np.float32))
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="nan.npy.*NaN"):
        Cohort.load(tmp_path / "nan.npy")
    np.save(tmp_path / "vec.npy", good[0])
    with pytest.raises(ValueError, match="2-D"):
        Cohort.load(tmp_path / "vec.npy")
    np.save(tmp_path / "good.npy", good)
    with pytest.raises(ValueError, match="expected 512"):
        Cohort.load(tmp_path / "good.npy", dim=512)
    with pytest.raises(WeightsError, match="sha256"):
        Cohort.load(tmp_path / "good.npy", sha256="0" * 64)
    with pytest.raises(WeightsError, match="not found"):
        Cohort.load(tmp_path / "missing.npy")
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(WeightsError, match="readable"):
        Cohort.load(tmp_path / "junk.npy")
    c = Cohort.load(tmp_path / "good.npy", top_k=5, dim=8)
    assert (c.size, c.dim, c.top_k, c.embeddings.dtype) == (20, 8, 5, np.float32)


@pytest.mark.parametrize("name", ["nested_4level", "resnetse34l_asp"])
def test_shipped_cohorts_load(name: str) -> None:
    from nestspk.card import ModelCard

    card = ModelCard.load(name)
    if card.cohort is None:
        pytest.skip("card has no cohort yet")
    c = Cohort.from_card(name)
    assert c.dim == card.embed_dim and c.size == card.cohort["speakers"] * card.cohort["segments_per_speaker"]
    assert c.top_k == card.asnorm["top_k"]
    assert math.isfinite(card.calibration["a"]) and card.calibration["a"] > 0


def test_scoring_imports_without_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None; import nestspk.scoring, nestspk.report; "
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibration_matches_sklearn(seed: int) -> None:
    scores, labels = _gaussian_trials(seed)
    a, b = fit_calibration(scores, labels)
    n_tar, n_non = labels.sum(), (1 - labels).sum()
    w = np.where(labels == 1, 0.5 / n_tar, 0.5 / n_non) * len(labels)  # prior 0.5 weighting
    lr = LogisticRegression(C=1e9, tol=1e-12, max_iter=10000).fit(scores[:, None], labels, sample_weight=w)
    np.testing.assert_allclose([a, b], [lr.coef_[0, 0], lr.intercept_[0]], rtol=1e-4, atol=1e-4)


def test_calibration_with_prior_matches_sklearn() -> None:
    scores, labels = _gaussian_trials(5)
    prior = 0.1
    a, b = fit_calibration(scores, labels, prior=prior)
    n_tar, n_non = labels.sum(), (1 - labels).sum()
    w = np.where(labels == 1, prior / n_tar, (1 - prior) / n_non) * len(labels)
    lr = LogisticRegression(C=1e9, tol=1e-12, max_iter=10000).fit(scores[:, None], labels, sample_weight=w)
    logit = math.log(prior / (1 - prior))
    np.testing.assert_allclose([a, b + logit], [lr.coef_[0, 0], lr.intercept_[0]], rtol=1e-4, atol=1e-4)


def test_calibration_gaussian_llr() -> None:
    # equal-variance Gaussians N(0,1) vs N(2,1): true llr = 2s - 2
    rng = np.random.default_rng(7)
    s = np.r_[rng.standard_normal(20000) + 2.0, rng.standard_normal(20000)]
    y = np.r_[np.ones(20000), np.zeros(20000)].astype(int)
    a, b = fit_calibration(s, y)
    assert abs(a - 2.0) < 0.1 and abs(b + 2.0) < 0.1


def test_llr_to_probability() -> None:
    np.testing.assert_allclose(llr_to_probability([0.0, math.log(3.0)]), [0.5, 0.75])
    np.testing.assert_allclose(llr_to_probability(0.0, prior=0.01), 0.01)
    assert llr_to_probability(1000.0) == 1.0 and llr_to_probability(-1000.0) == 0.0
    with pytest.raises(ValueError):
        llr_to_probability(0.0, prior=1.0)


def test_threshold_for() -> None:
    scores, labels = _gaussian_trials(11)
    fpr, tpr, thr = roc_curve(labels, scores)
    i = int(np.nanargmin(np.abs((1 - tpr) - fpr)))
    assert abs(threshold_for(scores, labels, "eer") - thr[i]) < 0.02
    t = threshold_for(scores, labels, "far", far=0.01)
    non = scores[labels == 0]
    assert np.mean(non >= t) <= 0.01
    assert np.mean(non >= np.max(scores[scores < t])) > 0.01  # the next lower score breaks the FAR
    assert threshold_for(scores, labels, "far", far=0.0) > non.max()
    with pytest.raises(ValueError):
        threshold_for(scores, labels, "frr")


# --------------------------------------------------------------------------- report


def test_report_matches_independent_computation(tmp_path) -> None:
    scores, labels = _gaussian_trials(21)
    thr = 0.3
    m = write_report(scores, labels, tmp_path, thr, "synthetic")
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    assert abs(m["eer"] - (fpr[i] + fnr[i]) / 2) < 2e-3
    for p in (0.01, 0.05):
        dcf = (p * fnr + (1 - p) * fpr) / min(p, 1 - p)
        assert m[f"min_dcf_{p}"] == pytest.approx(min(dcf.min(), 1.0), abs=1e-9)
        acc = scores >= thr
        want = (p * np.mean(~acc[labels == 1]) + (1 - p) * np.mean(acc[labels == 0])) / p
        assert m[f"act_dcf_{p}"] == pytest.approx(want)
    assert (m["n_target"], m["n_nontarget"]) == (int(labels.sum()), int((1 - labels).sum()))
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved == m and m["files"] == ["report.json", "det.png", "hist.png"]
    for f in ("det.png", "hist.png"):
        assert (tmp_path / f).read_bytes()[:4] == b"\x89PNG" and (tmp_path / f).stat().st_size > 5000


def test_report_without_matplotlib(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    scores, labels = _gaussian_trials(22, n=200)
    with caplog.at_level("WARNING"):
        m = write_report(scores, labels, tmp_path / "r", 0.3, "nompl")
    assert m["files"] == ["report.json"] and (tmp_path / "r" / "report.json").is_file()
    assert not (tmp_path / "r" / "det.png").exists()
    assert "matplotlib" in caplog.text


def test_probit() -> None:
    np.testing.assert_allclose(probit([0.5, 0.8413447460685429, 0.02275013194817921]), [0.0, 1.0, -2.0], atol=1e-9)
    assert np.isfinite(probit([0.0, 1.0])).all()
