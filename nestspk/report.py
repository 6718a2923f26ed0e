"""Evaluation report: metrics JSON, DET curve and score histograms.

numpy only; matplotlib is imported lazily and, when missing, only ``report.json`` is
written. Figures are drawn on :class:`matplotlib.figure.Figure` directly, so the global
pyplot backend is never touched.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .metrics import _validate, actual_dcf, compute_eer, compute_min_dcf, det_curve

__all__ = ["write_report", "probit"]

log = logging.getLogger(__name__)

_P_TARGETS = (0.01, 0.05)
_DET_TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
_DET_MIN = 0.0005  # lower axis limit (0.05 %)
_RATE_CLIP = 1e-4  # rates of 0 and 1 are drawn at the edge of the plot


def probit(p: ArrayLike) -> np.ndarray:
    """Standard normal deviate (inverse CDF) of probabilities, clipped to ``[1e-4, 1 - 1e-4]``."""
    q = np.clip(np.asarray(p, dtype=np.float64), _RATE_CLIP, 1.0 - _RATE_CLIP)
    inv = NormalDist().inv_cdf
    return np.vectorize(inv, otypes=[np.float64])(q) if q.ndim else np.float64(inv(float(q)))


def _metrics(s: np.ndarray, y: np.ndarray, threshold: float, name: str) -> dict[str, Any]:
    eer, eer_thr = compute_eer(s, y)
    out: dict[str, Any] = {"name": name, "eer": eer, "eer_threshold": eer_thr, "threshold": float(threshold)}
    for p in _P_TARGETS:
        out[f"min_dcf_{p}"], out[f"min_dcf_{p}_threshold"] = compute_min_dcf(s, y, p)
    for p in _P_TARGETS:
        out[f"act_dcf_{p}"] = actual_dcf(s, y, threshold, p)
    accept = s >= threshold
    out["fnr_at_threshold"] = float(np.mean(~accept[y]))
    out["fpr_at_threshold"] = float(np.mean(accept[~y]))
    out["n_target"] = int(y.sum())
    out["n_nontarget"] = int((~y).sum())
    return out


def _plot_det(s: np.ndarray, y: np.ndarray, m: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    fpr, fnr, _ = det_curve(s, y)
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.plot(probit(fpr), probit(fnr), lw=1.5, label=m["name"] or "DET")
    ax.plot(*probit([m["eer"], m["eer"]]), "o", ms=5, label=f"EER {100 * m['eer']:.2f}%")
    ax.plot(probit(m["fpr_at_threshold"]), probit(m["fnr_at_threshold"]), "s", ms=5,
            label=f"threshold {m['threshold']:.3g}")
    ticks = probit(_DET_TICKS)
    labels = [f"{100 * t:g}" for t in _DET_TICKS]
    lim = (probit(_DET_MIN), probit(0.5))
    for set_ticks, set_labels, set_lim in ((ax.set_xticks, ax.set_xticklabels, ax.set_xlim),
                                           (ax.set_yticks, ax.set_yticklabels, ax.set_ylim)):
        set_ticks(ticks)
        set_labels(labels)
        set_lim(*lim)
    ax.set_xlabel("false acceptance rate (%)")
    ax.set_ylabel("false rejection rate (%)")
    ax.set_title("DET curve")
    ax.grid(True, alpha=0.4)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _plot_hist(s: np.ndarray, y: np.ndarray, m: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    bins = np.linspace(float(s.min()), float(s.max()), 61)
    ax.hist(s[~y], bins=bins, density=True, alpha=0.55, label=f"non-target ({m['n_nontarget']})")
    ax.hist(s[y], bins=bins, density=True, alpha=0.55, label=f"target ({m['n_target']})")
    ax.axvline(m["threshold"], color="k", ls="--", lw=1, label=f"threshold {m['threshold']:.3g}")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.set_title(m["name"] or "score distributions")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_report(
    scores: ArrayLike,
    labels: ArrayLike,
    out_dir: str | os.PathLike,
    threshold: float,
    name: str = "",
) -> dict[str, Any]:
    """Write ``report.json``, ``det.png`` and ``hist.png`` to ``out_dir`` and return the metrics.

    Metrics: ``eer`` (+ ``eer_threshold``), ``min_dcf_0.01``/``min_dcf_0.05`` (+ thresholds),
    ``act_dcf_0.01``/``act_dcf_0.05`` at ``threshold``, FNR/FPR at ``threshold``,
    ``n_target``, ``n_nontarget``, ``name``, ``threshold`` and ``files`` (names written).
    Without matplotlib only the JSON is written and the skip is logged.
    """
    s, y = _validate(scores, labels)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite; got {threshold}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = _metrics(s, y, threshold, name)
    files = ["report.json"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log.warning("matplotlib not installed: skipped det.png and hist.png in %s", out)
    else:
        _plot_det(s, y, m, out / "det.png")
        _plot_hist(s, y, m, out / "hist.png")
        files += ["det.png", "hist.png"]
    m["files"] = files
    (out / "report.json").write_text(json.dumps(m, indent=1) + "\n")
    log.info("report %s: EER %.2f%%, minDCF0.01 %.3f, actDCF0.01 %.3f -> %s",
             name, 100 * m["eer"], m["min_dcf_0.01"], m["act_dcf_0.01"], out)
    return m
