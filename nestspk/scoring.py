"""Score normalisation (AS-norm), linear calibration and trial-list evaluation.

This module is numpy only; :func:`build_cohort` and :func:`update_card` embed through
an :class:`~nestspk.runtime.Embedder` (torch by default for :func:`update_card`).
Trial lists are scored by :func:`nestspk.evaluation.score_trials`.

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
from typing import TYPE_CHECKING, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .card import FileRef, ModelCard, sha256_file
from .errors import WeightsError
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
    "update_card",
]

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 100
"""Cohort size used by AS-norm when neither the caller nor the card says otherwise."""

_NORM_TOL = 1e-3
_SD_FLOOR = 1e-6
_CHUNK = 4096  # trials/embeddings per block when scoring against the cohort

if TYPE_CHECKING:  # pragma: no cover
    from .runtime import Embedder


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
    def from_card(cls, model: "str | os.PathLike | ModelCard", top_k: int | None = None) -> "Cohort":
        """The cohort shipped with a model (card key ``cohort``), sha256-verified; ``top_k`` from ``asnorm``.

        ``model``: a :class:`~nestspk.card.ModelCard` or a name/path :meth:`ModelCard.load` accepts.
        """
        card = model if isinstance(model, ModelCard) else ModelCard.load(model)
        if card.cohort is None:
            raise WeightsError(f"{card.name}: model card {card.path} has no 'cohort' entry")
        path = card.verified(FileRef(card.cohort["file"], card.cohort["sha256"]), "AS-norm cohort")
        k = top_k if top_k is not None else card.asnorm.get("top_k", DEFAULT_TOP_K)
        return cls.load(path, top_k=k, dim=card.embed_dim)

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


# --------------------------------------------------------------------------- cohort and card maintenance


def build_cohort(
    embedder: "Embedder",
    manifest: str | os.PathLike | Sequence[tuple[str, str]],
    root: str | os.PathLike | None = None,
    segments_per_speaker: int = 2,
    seconds: float = 4.0,
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
    from .corpus import default_data_root, read_train_list
    from .runtime import embed_waveforms

    if segments_per_speaker < 1 or seconds <= 0:
        raise ValueError("segments_per_speaker must be >= 1 and seconds > 0")
    rows = read_train_list(manifest) if isinstance(manifest, (str, os.PathLike)) else list(manifest)
    root = Path(root) if root is not None else default_data_root()
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
    if not wavs:
        raise ValueError(f"{manifest}: no recordings for the cohort")
    log.info("cohort: embedding %d crops of %.1f s from %d speakers", len(wavs), seconds, len(by_spk))
    emb = embed_waveforms(embedder, wavs, batch_size).astype(np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb.astype(np.float32)


def update_card(
    model: "str | os.PathLike | ModelCard",
    root: str | os.PathLike | None = None,
    segments_per_speaker: int = 2,
    seconds: float = 4.0,
    top_ks: Sequence[int] = (20, 50, 100, 200, 400),  # clipped to the cohort size
    backend: str = "torch",
) -> ModelCard:
    """Build and ship the cohort, pick AS-norm ``top_k``, fit calibration and measure operating points on dev.

    Writes ``<card dir>/<name>_cohort.npy`` and the card's ``cohort``, ``asnorm`` (``top_k`` with the lowest
    dev EER, ties to minDCF(0.01)), ``calibration`` (``a``, ``b`` fitted on raw dev cosine scores, prior 0.5)
    and ``operating_points`` (raw and AS-norm, :data:`nestspk.evaluation.OPERATING_POINTS`), all on the card's
    dev list through :func:`nestspk.evaluation.score_trials`. Returns the saved card.
    """
    from .evaluation import score_trials
    from .runtime import make_embedder

    card = model if isinstance(model, ModelCard) else ModelCard.load(model)
    embedder = make_embedder(card, backend=backend, device="cpu")
    train = card.list_path("train")
    emb = build_cohort(embedder, train, root, segments_per_speaker, seconds)
    cohort_file = f"{card.name}_cohort.npy"
    cohort_path = card.resolve(cohort_file)
    tmp = cohort_path.with_name(f".{cohort_file}.tmp.npy")
    np.save(tmp, emb)
    dev = card.list_path("dev")
    raw = score_trials(embedder, dev, root)
    a, b = fit_calibration(raw.scores, raw.labels)
    best = None
    for k in sorted({min(int(k), emb.shape[0]) for k in top_ks}):
        res = score_trials(embedder, dev, root, cohort=Cohort(emb, top_k=k))
        key = (compute_eer(res.scores, res.labels)[0], compute_min_dcf(res.scores, res.labels, 0.01)[0])
        log.info("dev AS-norm top_k=%d: EER %.4f minDCF0.01 %.4f", k, *key)
        if best is None or key < best[0]:
            best = (key, k, res)
    from .corpus import read_train_list

    n_spk = len({s for s, _ in read_train_list(train)})
    new = card.replace(
        cohort={"file": cohort_file, "sha256": sha256_file(tmp), "speakers": n_spk,
                "segments_per_speaker": segments_per_speaker, "seconds": seconds,
                "source": f"{card.lists['train']} (training speakers; disjoint from dev/test)"},
        asnorm={"top_k": best[1], "selected_on": dev.name},
        calibration={"a": a, "b": b, "fitted_on": dev.name, "raw_or_asnorm": "raw", "prior": 0.5},
        operating_points={"raw": raw.operating_points(), "asnorm": best[2].operating_points()},
        operating_points_fitted_on=dev.name,
    )
    os.replace(tmp, cohort_path)
    return ModelCard.load(new.save())


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nestspk.scoring --update-card``: rebuild a card's cohort, AS-norm top-k, calibration, thresholds.

    (Evaluating a trial list is ``nestspk eval``.)
    """
    p = argparse.ArgumentParser(prog="python -m nestspk.scoring", description=main.__doc__.splitlines()[0])
    p.add_argument("--model", default="nested_4level", help="shipped model name or a .json card")
    p.add_argument("--root", default=None, help="data root (default $NESTSPK_DATA or ../shared/data)")
    p.add_argument("--update-card", action="store_true", required=True,
                   help="build the cohort, choose top_k, fit calibration and operating points on the dev list")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch", help="runtime that embeds (CPU)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    card = update_card(args.model, args.root, backend=args.backend)
    print(json.dumps({k: card.to_dict()[k] for k in ("cohort", "asnorm", "calibration", "operating_points")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
