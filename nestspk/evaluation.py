"""The one trial-list evaluation: :func:`score_trials` through any :class:`~nestspk.runtime.Embedder`.

``nestspk eval``, the int8 metrics of ``nestspk-export`` and the card maintenance of
:mod:`nestspk.scoring` all score through here, so their figures agree. numpy only
(the embedder decides whether torch is needed).

Policy for segments: a trial-list file that is **missing** under the data root is an
error (:class:`MissingDataError`, naming the root tried and how to set another: the
root is wrong or incomplete); a segment that exists but **cannot be used** (unreadable,
shorter than :data:`~nestspk.audio.MIN_DURATION_S`, silent) is skipped, with its trials,
counted in :attr:`TrialScores.skipped` and logged.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .corpus import default_data_root, load_segment, missing_data_message, read_trials, split_segment
from .errors import AudioError, NestspkError
from .metrics import compute_eer, compute_min_dcf

if TYPE_CHECKING:  # pragma: no cover
    from .card import ModelCard
    from .runtime import Embedder
    from .scoring import Cohort

log = logging.getLogger(__name__)

__all__ = ["MissingDataError", "TrialScores", "TrialSegments", "load_trial_segments", "score_trials", "resolve_trials",
           "OPERATING_POINTS"]

OPERATING_POINTS = {"eer": ("eer", None), "far_0.01": ("far", 0.01), "far_0.001": ("far", 0.001)}
"""Operating points stored in model cards: name -> (:func:`nestspk.scoring.threshold_for` target, FAR)."""

class MissingDataError(NestspkError, FileNotFoundError):
    """Audio named by a trial list is not under the data root (the message says which root and how to set one)."""


@dataclass(frozen=True)
class TrialScores:
    """Scores of a trial list's usable trials (``labels`` 1 = target), on the raw cosine or AS-norm scale."""

    scores: np.ndarray
    labels: np.ndarray
    trials: str
    n_trials: int
    n_segments: int
    score_norm: str = "none"
    skipped: dict[str, str] = field(default_factory=dict)
    top_k: int | None = None
    cohort_size: int | None = None

    @property
    def n_kept(self) -> int:
        return int(len(self.labels))

    def metrics(self) -> dict[str, Any]:
        """EER (and its threshold), minDCF at p_target 0.01 and 0.05, and the counts."""
        eer, thr = compute_eer(self.scores, self.labels)
        return {"eer": eer, "eer_threshold": thr,
                "min_dcf_0.01": compute_min_dcf(self.scores, self.labels, 0.01)[0],
                "min_dcf_0.05": compute_min_dcf(self.scores, self.labels, 0.05)[0],
                "n_trials": self.n_trials, "n_kept": self.n_kept, "n_skipped": self.n_trials - self.n_kept,
                "n_target": int(self.labels.sum()), "n_nontarget": int((self.labels == 0).sum()),
                "n_segments": self.n_segments, "n_segments_bad": len(self.skipped), "score_norm": self.score_norm,
                "top_k": self.top_k, "cohort_size": self.cohort_size}

    def operating_points(self) -> dict[str, float]:
        """Thresholds of :data:`OPERATING_POINTS` on these scores (the card's ``operating_points`` entries)."""
        from .scoring import threshold_for

        return {name: threshold_for(self.scores, self.labels, target, far=far or 0.01)
                for name, (target, far) in OPERATING_POINTS.items()}


def resolve_trials(trials: str | os.PathLike, card: "ModelCard | None" = None) -> Path:
    """A trial-list path as given when it exists, else relative to the card's folder (``lists/test_trials.txt``)."""
    p = Path(trials)
    if p.is_file() or p.is_absolute() or card is None:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: trial list not found")
        return p
    beside = card.resolve(p)
    if beside.is_file():
        return beside
    raise FileNotFoundError(f"{p}: trial list not found (tried {p.resolve()} and {beside}, beside the "
                            f"{card.name} card)")


@dataclass(frozen=True)
class TrialSegments:
    """The rows of a trial list and its usable segments' waveforms, loaded once (:func:`load_trial_segments`)."""

    rows: list[tuple[int, str, str]]
    name: str
    waveforms: dict[str, np.ndarray]
    skipped: dict[str, str]

    @property
    def n_segments(self) -> int:
        return len(self.waveforms) + len(self.skipped)


def load_trial_segments(trials: str | os.PathLike | Sequence[tuple[int, str, str]],
                        root: str | os.PathLike | None = None, card: "ModelCard | None" = None) -> TrialSegments:
    """Read a trial list (or take its rows) and load every unique segment as 16 kHz mono float32.

    Missing audio raises :class:`MissingDataError`; unusable segments are kept in ``skipped`` (module docstring).
    """
    root = Path(root) if root is not None else default_data_root()
    if isinstance(trials, (str, os.PathLike)):
        path = resolve_trials(trials, card)
        rows, name = read_trials(path), str(path)
    else:
        rows, name = list(trials), "<trials>"
    segs = sorted({s for _, a, b in rows for s in (a, b)})
    files = {split_segment(s)[0] for s in segs}
    absent = sorted(f for f in files if not (Path(f) if os.path.isabs(f) else root / f).is_file())
    if absent:
        raise MissingDataError(missing_data_message(
            root, f"{len(absent)} of the {len(files)} audio files of {name} (e.g. {absent[0]})")
            + "; the shipped lists use LibriSpeech train-clean-100 snippets (CC BY 4.0, openslr.org/12): "
              "README section 'Data'")
    wavs: dict[str, np.ndarray] = {}
    bad: dict[str, str] = {}
    for spec in segs:
        try:
            wavs[spec] = load_segment(spec, root)
        except AudioError as e:
            bad[spec] = str(e)
    if bad:
        log.warning("%s: %d of %d segments unusable and skipped with their trials, e.g. %s",
                    name, len(bad), len(segs), next(iter(bad.values())))
    return TrialSegments(rows=rows, name=name, waveforms=wavs, skipped=bad)


def score_trials(embedder: "Embedder", trials: "str | os.PathLike | Sequence[tuple[int, str, str]] | TrialSegments",
                 root: str | os.PathLike | None = None, cohort: "Cohort | None" = None,
                 batch_size: int = 32) -> TrialScores:
    """Cosine scores (AS-norm with ``cohort``) of a trial list, every unique segment embedded once.

    ``trials``: a ``label path1 path2`` file (relative paths: as given, else beside ``embedder.card``), its
    rows, or :class:`TrialSegments` already loaded (training's dev set scores the same list every epoch).
    ``root``: the folder the list's paths are relative to (default :func:`nestspk.corpus.default_data_root`).
    Missing audio raises :class:`MissingDataError`; unusable segments are skipped (module docstring).
    """
    from .runtime import embed_waveforms
    from .scoring import _combine, cosine_scores

    loaded = trials if isinstance(trials, TrialSegments) else \
        load_trial_segments(trials, root, getattr(embedder, "card", None))
    rows, wavs = loaded.rows, loaded.waveforms
    kept = [t for t in rows if t[1] in wavs and t[2] in wavs]
    if not kept:
        raise NestspkError(f"{loaded.name}: no trial has two usable segments")
    names = sorted(wavs)
    index = {s: i for i, s in enumerate(names)}
    emb = embed_waveforms(embedder, [wavs[s] for s in names], batch_size)
    ia = np.array([index[a] for _, a, _ in kept])
    ib = np.array([index[b] for _, _, b in kept])
    labels = np.array([y for y, _, _ in kept], dtype=np.int64)
    scores = cosine_scores(emb[ia], emb[ib])
    if cohort is not None:
        mu, sd = cohort.stats(emb)  # once per unique segment
        scores = _combine(scores, mu[ia], sd[ia], mu[ib], sd[ib])
    return TrialScores(scores=scores, labels=labels, trials=loaded.name, n_trials=len(rows),
                       n_segments=loaded.n_segments, score_norm="asnorm" if cohort is not None else "none",
                       skipped=loaded.skipped, top_k=cohort.top_k if cohort is not None else None,
                       cohort_size=cohort.size if cohort is not None else None)
