"""Score normalisation (AS-norm), linear calibration and trial-list evaluation.

Everything above :func:`build_cohort` is numpy only and must stay importable without
torch (the ONNX backend uses it). :func:`build_cohort`, :func:`evaluate_trials` and the
``python -m nestspk.scoring`` entry point import torch lazily, through the default
embedder (:func:`~nestspk.checkpoints.load_model`), unless an ``embed_fn`` is given.

Conventions follow :mod:`nestspk.metrics`: labels are 1 for target trials, 0 for
non-target trials; a trial is accepted when ``score >= threshold``. Embeddings are
L2-normalised rows, so the cosine score is a dot product.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .checkpoints import read_card, resolve_card, sha256_file, verified_path
from .errors import AudioError, WeightsError
from .metrics import _validate, compute_eer, compute_min_dcf, det_curve

__all__ = [
    "DEFAULT_TOP_K",
    "Cohort",
    "cohort_stats",
    "asnorm",
    "cosine_scores",
    "fit_calibration",
    "llr_to_probability",
    "apply_calibration",
    "threshold_for",
    "build_cohort",
    "score_trials",
    "evaluate_trials",
    "update_card",
]

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 100
"""Cohort size used by AS-norm when neither the caller nor the card says otherwise."""

_NORM_TOL = 1e-3
_SD_FLOOR = 1e-6
_CHUNK = 4096  # trials/embeddings per block when scoring against the cohort

EmbedFn = Callable[[np.ndarray], np.ndarray]
"""Batch of 16 kHz waveforms ``(B, T)`` float32 -> L2-normalised embeddings ``(B, D)``."""


# --------------------------------------------------------------------------- AS-norm


def _as_embeddings(x: ArrayLike, name: str, dim: int | None = None) -> np.ndarray:
    """``x`` as a finite float32 ``(n, D)`` array; ValueError otherwise."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, D); got shape {a.shape}")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be real numbers; got dtype {a.dtype}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name} has dimension {a.shape[1]}, expected {dim}")
    a = a.astype(np.float32, copy=False)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def cosine_scores(emb_a: ArrayLike, emb_b: ArrayLike) -> np.ndarray:
    """Row-wise cosine similarity of two ``(n, D)`` arrays -> ``(n,)`` float64."""
    a = np.asarray(emb_a, dtype=np.float64)
    b = np.asarray(emb_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"embeddings must both be (n, D); got {a.shape} and {b.shape}")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return np.einsum("nd,nd->n", a, b) / np.maximum(na * nb, 1e-12)


def cohort_stats(emb: ArrayLike, cohort: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (ddof=0) of each row's ``top_k`` highest cohort cosines.

    Args:
        emb: ``(n, D)`` L2-normalised embeddings.
        cohort: ``(N, D)`` L2-normalised cohort embeddings.
        top_k: cohort scores kept per row; values ``>= N`` use the whole cohort.

    Returns:
        ``(mu, sd)``, each ``(n,)`` float64; ``sd`` is floored at 1e-6.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1; got {top_k}")
    e = _as_embeddings(emb, "embeddings", cohort.shape[1])
    k = min(int(top_k), cohort.shape[0])
    mu = np.empty(e.shape[0])
    sd = np.empty(e.shape[0])
    for i in range(0, e.shape[0], _CHUNK):
        s = e[i:i + _CHUNK].astype(np.float64) @ cohort.T.astype(np.float64)  # (c, N)
        if k < s.shape[1]:
            s = np.partition(s, s.shape[1] - k, axis=1)[:, -k:]
        mu[i:i + _CHUNK] = s.mean(axis=1)
        sd[i:i + _CHUNK] = s.std(axis=1)
    return mu, np.maximum(sd, _SD_FLOOR)


def _combine(s: np.ndarray, mu_e: np.ndarray, sd_e: np.ndarray, mu_t: np.ndarray, sd_t: np.ndarray) -> np.ndarray:
    return 0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)


def asnorm(
    scores: ArrayLike,
    enroll_emb: ArrayLike,
    test_emb: ArrayLike,
    cohort: ArrayLike,
    top_k: int = DEFAULT_TOP_K,
) -> np.ndarray:
    """Adaptive symmetric score normalisation (AS-norm1) of many trials at once.

    For trial ``i`` with raw score ``s_i``: ``mu_e, sd_e`` are the mean and standard
    deviation (ddof=0) of the ``top_k`` highest cosines between ``enroll_emb[i]`` and
    the cohort, ``mu_t, sd_t`` the same for ``test_emb[i]``, and
    ``s_norm = 0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)``.

    Args:
        scores: ``(n,)`` raw scores (normally the cosine of the two embeddings).
        enroll_emb, test_emb: ``(n, D)`` L2-normalised embeddings of the two sides.
        cohort: ``(N, D)`` L2-normalised cohort embeddings.
        top_k: cohort scores kept per side (``>= N`` means all).

    Returns:
        ``(n,)`` float64 normalised scores.
    """
    c = _as_embeddings(cohort, "cohort")
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D; got shape {s.shape}")
    e = _as_embeddings(enroll_emb, "enroll_emb", c.shape[1])
    t = _as_embeddings(test_emb, "test_emb", c.shape[1])
    if not (e.shape[0] == t.shape[0] == s.shape[0]):
        raise ValueError(f"length mismatch: {s.shape[0]} scores, {e.shape[0]} enroll and {t.shape[0]} test embeddings")
    mu_e, sd_e = cohort_stats(e, c, top_k)
    mu_t, sd_t = cohort_stats(t, c, top_k)
    return _combine(s, mu_e, sd_e, mu_t, sd_t)


class Cohort:
    """A validated AS-norm cohort: float32 ``(N, D)`` L2-normalised, finite embeddings."""

    def __init__(self, embeddings: ArrayLike, top_k: int = DEFAULT_TOP_K, dim: int | None = None):
        """Validate ``embeddings``; ValueError if not 2-D, not finite, of another ``dim`` or not unit-norm."""
        e = _as_embeddings(embeddings, "cohort", dim)
        if e.shape[0] == 0:
            raise ValueError("cohort is empty")
        norms = np.linalg.norm(e.astype(np.float64), axis=1)
        if np.any(np.abs(norms - 1.0) > _NORM_TOL):
            bad = int(np.sum(np.abs(norms - 1.0) > _NORM_TOL))
            raise ValueError(f"cohort rows must be L2-normalised; {bad} of {e.shape[0]} rows have norm != 1")
        if int(top_k) < 1:
            raise ValueError(f"top_k must be >= 1; got {top_k}")
        self.embeddings = np.ascontiguousarray(e)
        self.top_k = int(top_k)

    @property
    def size(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __repr__(self) -> str:
        return f"Cohort(size={self.size}, dim={self.dim}, top_k={self.top_k})"

    @classmethod
    def load(cls, path: str | os.PathLike, top_k: int = DEFAULT_TOP_K, dim: int | None = None,
             sha256: str | None = None) -> "Cohort":
        """Load a ``.npy`` cohort (no pickles); WeightsError if missing, unreadable or its sha256 differs."""
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"{path}: cohort file not found")
        if sha256 is not None and (digest := sha256_file(path)) != sha256:
            raise WeightsError(f"{path}: sha256 {digest[:16]}... does not match the expected {sha256[:16]}...")
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise WeightsError(f"{path}: not a readable .npy array ({e})") from e
        try:
            return cls(arr, top_k=top_k, dim=dim)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    @classmethod
    def from_card(cls, model: str | os.PathLike | dict, top_k: int | None = None) -> "Cohort":
        """The cohort shipped with a model (card key ``cohort``), sha256-verified; ``top_k`` from ``asnorm``.

        ``model``: a name/path accepted by :func:`~nestspk.checkpoints.resolve_card`, or an already read card.
        """
        card = model if isinstance(model, dict) else read_card(resolve_card(model))
        if "cohort" not in card:
            raise WeightsError(f"{card['name']}: model card has no 'cohort' entry")
        path = verified_path(card["cohort"] | {"_dir": card["_dir"], "name": card["name"]}, "file", "sha256")
        k = top_k if top_k is not None else card.get("asnorm", {}).get("top_k", DEFAULT_TOP_K)
        return cls.load(path, top_k=k, dim=card.get("embed_dim"))

    def stats(self, emb: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, sd)`` of each row's ``top_k`` highest cohort cosines (see :func:`cohort_stats`)."""
        return cohort_stats(emb, self.embeddings, self.top_k)

    def normalize(self, scores: ArrayLike, emb_a: ArrayLike, emb_b: ArrayLike) -> np.ndarray:
        """AS-norm of ``scores`` for trials ``(emb_a[i], emb_b[i])`` (see :func:`asnorm`)."""
        return asnorm(scores, emb_a, emb_b, self.embeddings, self.top_k)


# --------------------------------------------------------------------------- calibration


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def _check_prior(prior: float) -> None:
    if not (0.0 < prior < 1.0):
        raise ValueError(f"prior must be in (0, 1); got {prior}")


def _labelled(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate like :mod:`nestspk.metrics`: finite 1-D scores, 0/1 labels with both classes."""
    return _validate(scores, labels)


def fit_calibration(
    scores: ArrayLike,
    labels: ArrayLike,
    prior: float = 0.5,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[float, float]:
    """Prior-weighted linear logistic calibration ``llr = a * score + b`` (BOSARIS style).

    Minimises the prior-weighted cross-entropy
    ``prior/N_tar * sum_tar log(1 + e^-(llr + logit prior))
    + (1-prior)/N_non * sum_non log(1 + e^(llr + logit prior))``
    by Newton's method with backtracking, without regularisation.

    Returns:
        ``(a, b)`` as floats. Perfectly separable scores have no finite optimum: a
        warning is logged and the last iterate returned.
    """
    _check_prior(prior)
    s, y = _labelled(scores, labels)
    n_tar, n_non = int(y.sum()), int((~y).sum())
    w = np.where(y, prior / n_tar, (1.0 - prior) / n_non)
    off = _logit(prior)
    # standardise for conditioning: llr = a' * z + b' with z = (s - m) / d
    m, d = float(s.mean()), float(s.std()) or 1.0
    x = np.stack([(s - m) / d, np.ones_like(s)], axis=1)
    t = y.astype(np.float64)

    def loss(theta: np.ndarray) -> float:
        z = x @ theta + off
        return float(np.sum(w * np.where(y, np.logaddexp(0.0, -z), np.logaddexp(0.0, z))))

    theta = np.zeros(2)
    cur = loss(theta)
    converged = False
    for _ in range(max_iter):
        z = x @ theta + off
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # stable sigmoid
        grad = x.T @ (w * (p - t))
        hess = (x * (w * p * (1.0 - p))[:, None]).T @ x + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        lr = 1.0
        while True:
            cand = theta - lr * step
            new = loss(cand)
            if new <= cur or lr < 1e-8:
                break
            lr *= 0.5
        theta, prev, cur = cand, cur, new
        if np.max(np.abs(lr * step)) < tol or prev - cur < tol * max(1.0, abs(cur)) * 1e-3:
            converged = True
            break
    if not converged:
        log.warning("fit_calibration: no convergence in %d iterations (separable scores?)", max_iter)
    a = theta[0] / d
    b = theta[1] - theta[0] * m / d
    return float(a), float(b)


def apply_calibration(scores: ArrayLike, a: float, b: float) -> np.ndarray:
    """``llr = a * scores + b`` as float64."""
    return a * np.asarray(scores, dtype=np.float64) + b


def llr_to_probability(llr: ArrayLike, prior: float = 0.5) -> np.ndarray:
    """Posterior probability of a target trial: ``sigmoid(llr + logit(prior))``."""
    _check_prior(prior)
    z = np.asarray(llr, dtype=np.float64) + _logit(prior)
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def threshold_for(
    scores: ArrayLike,
    labels: ArrayLike,
    target: str = "eer",
    far: float = 0.01,
    p_target: float = 0.01,
) -> float:
    """Decision threshold (accept ``score >= threshold``) for an operating point.

    Args:
        target: ``'eer'`` (interpolated equal-error-rate threshold), ``'far'`` (the lowest
            unique score whose false-accept rate is ``<= far``; above the top score if
            none) or ``'min_dcf'`` (the minimum-DCF threshold at ``p_target``).
    """
    if target == "eer":
        return compute_eer(scores, labels)[1]
    if target == "min_dcf":
        return compute_min_dcf(scores, labels, p_target=p_target)[1]
    if target == "far":
        if not (0.0 <= far <= 1.0):
            raise ValueError(f"far must be in [0, 1]; got {far}")
        fpr, _, thr = det_curve(scores, labels)
        ok = np.nonzero(fpr <= far)[0]
        if ok.size == 0:
            return float(np.nextafter(thr[0], np.inf))
        return float(thr[ok[-1]])
    raise ValueError(f"target must be 'eer', 'far' or 'min_dcf'; got {target!r}")


# --------------------------------------------------------------------------- embedding (torch only here)


def _torch_embedder(model_name: str | os.PathLike, device: str = "cpu") -> tuple[EmbedFn, dict]:
    """``(embed_fn, card)`` for a shipped model; imports torch."""
    import torch

    from .checkpoints import load_model

    net, card = load_model(model_name, device=device)

    def embed(wav: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net.embed(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).to(device)).cpu().numpy()

    return embed, card


def _embed_waveforms(wavs: Sequence[np.ndarray], embed_fn: EmbedFn, batch_size: int) -> np.ndarray:
    """Embed 1-D waveforms, batching those of equal length; rows keep the input order."""
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, w in enumerate(wavs):
        by_len[len(w)].append(i)
    out: np.ndarray | None = None
    for length in sorted(by_len):
        idx = by_len[length]
        for j in range(0, len(idx), batch_size):
            chunk = idx[j:j + batch_size]
            emb = np.asarray(embed_fn(np.stack([wavs[i] for i in chunk])), dtype=np.float32)
            if out is None:
                out = np.empty((len(wavs), emb.shape[1]), dtype=np.float32)
            out[chunk] = emb
    if out is None:
        raise ValueError("no waveforms to embed")
    return out


def build_cohort(
    model_name: str | os.PathLike,
    manifest: str | os.PathLike | Sequence[tuple[str, str]],
    root: str | os.PathLike | None = None,
    segments_per_speaker: int = 2,
    seconds: float = 4.0,
    embed_fn: EmbedFn | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """AS-norm cohort: ``segments_per_speaker`` crop embeddings per manifest speaker.

    Crops (not a per-speaker mean, so the top-k selection sees within-speaker variety)
    of ``seconds`` are taken at evenly spaced offsets over each speaker's recordings in
    turn (crop ``i`` from recording ``i mod n``; spaced from the start to the end of it,
    so two 4 s crops of a 12.5 s recording do not overlap); a shorter recording is used
    whole. Speakers are in sorted order.

    Returns:
        float32 ``(n_speakers * segments_per_speaker, D)``, L2-normalised rows.
    """
    from .audio import TARGET_SAMPLE_RATE, load_audio
    from .corpus import default_data_root, read_train_list as read_manifest

    if segments_per_speaker < 1 or seconds <= 0:
        raise ValueError("segments_per_speaker must be >= 1 and seconds > 0")
    rows = read_manifest(manifest) if isinstance(manifest, (str, os.PathLike)) else list(manifest)
    root = Path(root) if root is not None else default_data_root()
    if embed_fn is None:
        embed_fn, _ = _torch_embedder(model_name)
    by_spk: dict[str, list[str]] = defaultdict(list)
    for spk, path in rows:
        by_spk[spk].append(path)
    crop = int(round(seconds * TARGET_SAMPLE_RATE))
    wavs: list[np.ndarray] = []
    for spk in sorted(by_spk):
        paths = by_spk[spk]
        audio = [load_audio(root / p) for p in paths]
        for i in range(segments_per_speaker):
            r = i % len(paths)
            w = audio[r]
            # crops from this recording: indices i, i + n, i + 2n, ... -> position among them
            n_here = len(range(r, segments_per_speaker, len(paths)))
            pos = i // len(paths)
            room = max(len(w) - crop, 0)
            start = 0 if n_here == 1 else int(round(pos * room / (n_here - 1)))
            wavs.append(w[start:start + crop])
    log.info("cohort: embedding %d crops of %.1f s from %d speakers", len(wavs), seconds, len(by_spk))
    emb = _embed_waveforms(wavs, embed_fn, batch_size)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb.astype(np.float32)


# --------------------------------------------------------------------------- trial lists


def score_trials(
    model_name: str | os.PathLike,
    trials_path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    score_norm: str | None = None,
    cohort: Cohort | None = None,
    embed_fn: EmbedFn | None = None,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Cosine (or AS-norm) scores of a trial list.

    Every unique segment is loaded and embedded once (equal-length segments batched).
    Trials with a segment that cannot be loaded (e.g. shorter than
    :data:`~nestspk.audio.MIN_DURATION_S`) are skipped and counted.

    Returns:
        ``(scores (n,), labels (n,) int, info)``; ``info`` has ``n_trials``, ``n_kept``,
        ``n_skipped``, ``n_segments``, ``n_segments_bad``, ``score_norm``, ``top_k``.
    """
    from .corpus import default_data_root, load_segment, read_trials

    if score_norm not in (None, "none", "asnorm"):
        raise ValueError(f"score_norm must be None or 'asnorm'; got {score_norm!r}")
    score_norm = None if score_norm == "none" else score_norm
    if score_norm == "asnorm" and cohort is None:
        cohort = Cohort.from_card(model_name)
    root = Path(root) if root is not None else default_data_root()
    trials = read_trials(trials_path)
    if embed_fn is None:
        embed_fn, _ = _torch_embedder(model_name)
    segs = sorted({p for _, a, b in trials for p in (a, b)})
    wavs: dict[str, np.ndarray] = {}
    bad: dict[str, str] = {}
    for spec in segs:
        try:
            wavs[spec] = load_segment(spec, root)
        except AudioError as e:
            bad[spec] = str(e)
    if bad:
        log.info("%s: %d of %d segments unusable, e.g. %s", trials_path, len(bad), len(segs), next(iter(bad.values())))
    kept = [t for t in trials if t[1] in wavs and t[2] in wavs]
    if not kept:
        raise ValueError(f"{trials_path}: no trial has two loadable segments")
    names = sorted(wavs)
    index = {s: i for i, s in enumerate(names)}
    emb = _embed_waveforms([wavs[s] for s in names], embed_fn, batch_size)
    ia = np.array([index[a] for _, a, _ in kept])
    ib = np.array([index[b] for _, _, b in kept])
    labels = np.array([y for y, _, _ in kept], dtype=np.int64)
    scores = cosine_scores(emb[ia], emb[ib])
    if score_norm == "asnorm":
        mu, sd = cohort.stats(emb)  # once per unique segment
        scores = _combine(scores, mu[ia], sd[ia], mu[ib], sd[ib])
    info = {"n_trials": len(trials), "n_kept": len(kept), "n_skipped": len(trials) - len(kept),
            "n_segments": len(segs), "n_segments_bad": len(bad), "score_norm": score_norm or "none",
            "top_k": cohort.top_k if score_norm == "asnorm" else None,
            "cohort_size": cohort.size if score_norm == "asnorm" else None}
    return scores, labels, info


def evaluate_trials(
    model_name: str | os.PathLike,
    trials_path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    score_norm: str | None = None,
    cohort: Cohort | None = None,
    embed_fn: EmbedFn | None = None,
    report_dir: str | os.PathLike | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """EER and minDCF(0.01, 0.05) of a trial list, raw cosine or AS-norm (``score_norm='asnorm'``).

    With ``report_dir``, also writes :func:`nestspk.report.write_report` files there at
    ``threshold`` (default: the card's raw threshold, or its ``asnorm.threshold``).

    Returns:
        ``{"model", "trials", "eer", "eer_threshold", "min_dcf_0.01", "min_dcf_0.05",
        "n_target", "n_nontarget"}`` plus the ``info`` of :func:`score_trials`
        (and ``"report"`` with ``report_dir``).
    """
    scores, labels, info = score_trials(model_name, trials_path, root, score_norm, cohort, embed_fn)
    eer, eer_thr = compute_eer(scores, labels)
    out: dict[str, Any] = {
        "model": str(model_name), "trials": str(trials_path),
        "eer": eer, "eer_threshold": eer_thr,
        "min_dcf_0.01": compute_min_dcf(scores, labels, 0.01)[0],
        "min_dcf_0.05": compute_min_dcf(scores, labels, 0.05)[0],
        "n_target": int(labels.sum()), "n_nontarget": int((labels == 0).sum()),
    } | info
    if report_dir is not None:
        from .report import write_report

        if threshold is None:
            card = read_card(resolve_card(model_name))
            threshold = card["asnorm"]["threshold"] if info["score_norm"] == "asnorm" else card["threshold"]
        name = f"{Path(str(model_name)).stem} {Path(trials_path).name} {info['score_norm']}"
        out["report"] = write_report(scores, labels, report_dir, threshold, name)
    log.info("%s %s %s: EER %.2f%% minDCF0.01 %.3f (%d/%d trials)", model_name, trials_path, info["score_norm"],
             100 * eer, out["min_dcf_0.01"], info["n_kept"], info["n_trials"])
    return out


# --------------------------------------------------------------------------- card maintenance


def _write_card_keys(card_path: Path, updates: dict[str, Any]) -> None:
    """Set top-level ``updates`` keys of a card, keeping every other key as is."""
    data = json.loads(card_path.read_text())
    data.update(updates)
    card_path.write_text(json.dumps(data, indent=1) + "\n")


def update_card(
    model_name: str,
    root: str | os.PathLike | None = None,
    lists_dir: str | os.PathLike | None = None,
    segments_per_speaker: int = 2,
    seconds: float = 4.0,
    top_ks: Sequence[int] = (20, 50, 100, 200, 400),  # clipped to the cohort size
) -> dict[str, Any]:
    """Build and ship the cohort, pick AS-norm ``top_k`` and fit calibration, all on dev trials.

    Writes ``<weights>/<name>_cohort.npy`` and the card keys ``cohort``, ``asnorm``
    (``top_k`` with the lowest dev EER, ties to minDCF(0.01), and its EER threshold) and
    ``calibration`` (``a``, ``b`` fitted on raw dev cosine scores, prior 0.5).
    """
    card_path = resolve_card(model_name)
    card = read_card(card_path)
    lists = Path(lists_dir) if lists_dir is not None else Path(card["_dir"]) / "lists"
    embed_fn, _ = _torch_embedder(model_name)
    emb = build_cohort(model_name, lists / "train.txt", root, segments_per_speaker, seconds, embed_fn=embed_fn)
    cohort_file = f"{card['name']}_cohort.npy"
    cohort_path = Path(card["_dir"]) / cohort_file
    np.save(cohort_path, emb)
    n_spk = len({s for s, _ in _read_rows(lists / "train.txt")})
    cohort_entry = {"file": cohort_file, "sha256": sha256_file(cohort_path), "speakers": n_spk,
                    "segments_per_speaker": segments_per_speaker, "seconds": seconds,
                    "source": f"{lists.name}/train.txt (training speakers; disjoint from dev/test)"}
    dev = lists / "dev_trials.txt"
    raw, labels, _ = score_trials(model_name, dev, root, embed_fn=embed_fn)
    a, b = fit_calibration(raw, labels)
    best = None
    for k in sorted({min(int(k), emb.shape[0]) for k in top_ks}):
        s, y, _ = score_trials(model_name, dev, root, "asnorm", Cohort(emb, top_k=k), embed_fn=embed_fn)
        key = (compute_eer(s, y)[0], compute_min_dcf(s, y, 0.01)[0])
        log.info("dev AS-norm top_k=%d: EER %.4f minDCF0.01 %.4f", k, *key)
        if best is None or key < best[0]:
            best = (key, k, compute_eer(s, y)[1])
    updates = {
        "cohort": cohort_entry,
        "asnorm": {"top_k": best[1], "threshold": best[2], "selected_on": dev.name,
                   "threshold_source": "AS-norm score at the equal-error-rate point of the dev trials"},
        "calibration": {"a": a, "b": b, "fitted_on": dev.name, "raw_or_asnorm": "raw", "prior": 0.5},
    }
    _write_card_keys(card_path, updates)
    return updates


OPERATING_POINTS = {"eer": ("eer", None), "far_0.01": ("far", 0.01), "far_0.001": ("far", 0.001)}


def update_operating_points(model: str | os.PathLike, trials: str | os.PathLike = "weights/lists/dev_trials.txt",
                            root: str | os.PathLike | None = None) -> dict:
    """Write card key ``operating_points``: thresholds for EER / FAR 1% / FAR 0.1% on ``trials``, raw and AS-norm."""
    card_path = resolve_card(model)
    out: dict[str, Any] = {"fitted_on": Path(trials).name}
    for norm in (None, "asnorm"):
        scores, labels, _ = score_trials(model, trials, root=root, score_norm=norm)
        out["asnorm" if norm else "raw"] = {
            name: threshold_for(scores, labels, target, far=far or 0.01) for name, (target, far) in OPERATING_POINTS.items()}
    _write_card_keys(Path(card_path), {"operating_points": out})
    return out


def _read_rows(path: Path) -> list[tuple[str, str]]:
    from .corpus import read_train_list as read_manifest

    return read_manifest(path)


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nestspk.scoring``: evaluate a trial list (or rebuild a card's cohort/calibration)."""
    p = argparse.ArgumentParser(prog="python -m nestspk.scoring", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="nested_4level")
    p.add_argument("--trials", help="trial list (label path1 path2)")
    p.add_argument("--root", default=None, help="data root (default $NESTSPK_DATA or ../shared/data)")
    p.add_argument("--score-norm", choices=["none", "asnorm"], default="none")
    p.add_argument("--top-k", type=int, default=None, help="AS-norm cohort top-k (default: the card's)")
    p.add_argument("--report-dir", default=None, help="write report.json, det.png, hist.png here")
    p.add_argument("--threshold", type=float, default=None, help="operating threshold for the report")
    p.add_argument("--update-card", action="store_true",
                   help="build the cohort, choose top_k and fit calibration on dev trials; write them to the card")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.update_card:
        result: dict[str, Any] = update_card(args.model, args.root)
        result["operating_points"] = update_operating_points(args.model, root=args.root)
    else:
        if not args.trials:
            p.error("--trials is required (or --update-card)")
        cohort = Cohort.from_card(args.model, args.top_k) if args.score_norm == "asnorm" else None
        result = evaluate_trials(args.model, args.trials, args.root, args.score_norm, cohort,
                                 report_dir=args.report_dir, threshold=args.threshold)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
