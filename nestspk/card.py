"""The model card: the one reader and writer of ``weights/<name>.json``.

A shipped model is ``<name>.pt`` (weights), ``<name>.json`` (this card) and optional
ONNX exports and an AS-norm cohort beside it. :class:`ModelCard` validates the JSON on
load (errors name the card file and the key), migrates the first card format (a
top-level ``threshold``, ``weights_file``/``sha256``, ``onnx_*`` keys) and always
writes the current one (:data:`CARD_FORMAT`), atomically.

Decision thresholds live in one place: ``operating_points[scale][name]`` with scale
``"raw"`` (cosine, in [-1, 1]) or ``"asnorm"``; the default threshold is exactly the
``raw`` ``"eer"`` point. An export (``exports["int8"]``) may carry its own operating
points, measured with that file.

This module needs only the standard library and numpy; :meth:`ModelCard.build_model`
imports torch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .audio import TARGET_SAMPLE_RATE
from .errors import WeightsError
from .fileio import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    from .features import FrontendConfig
    from .models import SpeakerModel

log = logging.getLogger(__name__)

__all__ = [
    "CARD_FORMAT", "DEFAULT_MODEL", "ALIASES", "SCALES", "PRECISIONS", "FileRef", "Export", "ModelCard",
    "weights_dir", "sha256_file", "resolve_card",
]

CARD_FORMAT = "nestspk-card/2"
DEFAULT_MODEL = "nested_4level"
ALIASES = {"nested": "nested_4level", "resnetse34l": "resnetse34l_asp", "baseline": "resnetse34l_asp"}
SCALES = ("raw", "asnorm")
"""Score scales: raw cosine in [-1, 1]; AS-norm (unbounded, about standard-normal for non-target trials)."""
PRECISIONS = ("fp32", "int8")
"""ONNX exports: ``fp32`` (exact) and ``int8`` (quantised for CPU, :mod:`nestspk.export`)."""
DEFAULT_LISTS = {"train": "lists/train.txt", "dev": "lists/dev_trials.txt", "test": "lists/test_trials.txt"}
"""Data lists of a card, relative to the card's folder, unless the card names others."""

_KEYS = ("format", "name", "model", "model_options", "frontend", "embed_dim", "parameters", "weights",
         "operating_points", "metrics", "metrics_note", "training", "cohort", "asnorm", "calibration", "exports",
         "lists")
_OLD_KEYS = ("weights_file", "sha256", "threshold", "threshold_source", "onnx_file", "onnx_sha256", "onnx_parity",
             "onnx_int8_file", "onnx_int8_sha256", "onnx_int8_parity", "onnx_int8_metrics", "onnx_int8_calibration")


def weights_dir() -> Path:
    """Folder of the shipped weights (``weights/`` in the repo, ``nestspk/weights`` when installed).

    Falls back to the repository layout when nestspk runs from a source tree on ``PYTHONPATH``
    without being installed (then the ``nestspk.weights`` package mapping does not exist).
    """
    try:
        return Path(str(resources.files("nestspk.weights")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "weights"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_card(model: str | os.PathLike) -> Path:
    """Card path for a shipped name/alias, a ``.json`` card path, or a ``.pt``/``.onnx`` with a card beside it."""
    s = str(model)
    p = Path(s)
    if p.suffix == ".json":
        card = p
    elif p.suffix in (".pt", ".onnx"):
        card = p.with_name(p.name.split(".")[0] + ".json")
    else:
        card = weights_dir() / f"{ALIASES.get(s, s)}.json"
        if not card.is_file():
            shipped = sorted(c.stem for c in weights_dir().glob("*.json"))
            raise WeightsError(f"unknown model {s!r}: no card {card}; shipped models: {shipped}, aliases: {sorted(ALIASES)}")
    if not card.is_file():
        raise WeightsError(f"{s}: model card {card} not found")
    return card


@dataclass(frozen=True)
class FileRef:
    """A file beside the card (``file`` relative to the card's folder) and its expected sha256."""

    file: str
    sha256: str


@dataclass(frozen=True)
class Export:
    """An ONNX export named by the card.

    ``parity``: cosine/abs-diff to torch fp32 on real clips; ``metrics``: ``{split: {eer, min_dcf_*, trials}}``
    measured with this file; ``operating_points``: ``{scale: {name: threshold}}`` measured with this file
    (``None``: use the card's); ``calibration_data``: how an int8 file was calibrated.
    """

    file: str
    sha256: str
    parity: dict | None = None
    metrics: dict | None = None
    operating_points: dict[str, dict[str, float]] | None = None
    calibration_data: dict | None = None


def _fail(path: Path, key: str, msg: str) -> WeightsError:
    return WeightsError(f"{path}: model card key {key!r}: {msg}")


def _need(d: Mapping, key: str, kind: type | tuple, path: Path, where: str = "") -> Any:
    full = f"{where}{key}"
    if key not in d:
        raise _fail(path, full, "missing")
    v = d[key]
    if not isinstance(v, kind) or isinstance(v, bool) and kind in (int, float, (int, float)):
        raise _fail(path, full, f"expected {getattr(kind, '__name__', kind)}, got {type(v).__name__} {v!r:.80}")
    return v


def _file_ref(d: Any, path: Path, key: str) -> FileRef:
    if not isinstance(d, Mapping):
        raise _fail(path, key, f"expected an object with 'file' and 'sha256', got {d!r:.80}")
    f = _need(d, "file", str, path, f"{key}.")
    sha = _need(d, "sha256", str, path, f"{key}.")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise _fail(path, f"{key}.sha256", f"not a hex sha256: {sha!r:.80}")
    return FileRef(f, sha)


def _points(d: Any, path: Path, key: str) -> dict[str, dict[str, float]]:
    """``{scale: {name: threshold}}``, each threshold finite (raw cosine within [-1, 1])."""
    if not isinstance(d, Mapping):
        raise _fail(path, key, f"expected an object of scales {SCALES}, got {d!r:.80}")
    out: dict[str, dict[str, float]] = {}
    for scale, points in d.items():
        if scale == "fitted_on":
            continue
        if scale not in SCALES:
            raise _fail(path, f"{key}.{scale}", f"unknown score scale; known: {list(SCALES)}")
        if not isinstance(points, Mapping):
            raise _fail(path, f"{key}.{scale}", f"expected an object of thresholds, got {points!r:.80}")
        out[scale] = {}
        for name, thr in points.items():
            where = f"{key}.{scale}.{name}"
            if not isinstance(thr, (int, float)) or isinstance(thr, bool) or not math.isfinite(thr):
                raise _fail(path, where, f"threshold must be a finite number, got {thr!r:.80}")
            if scale == "raw" and not -1.0 <= thr <= 1.0:
                raise _fail(path, where, f"raw cosine threshold {thr} is outside [-1, 1]")
            out[scale][str(name)] = float(thr)
    return out


def _migrate(raw: dict, path: Path) -> dict:
    """A first-format card (no ``format`` key) in the current form; the old duplicate thresholds are dropped."""
    d = {k: v for k, v in raw.items() if k not in _OLD_KEYS}
    d["format"] = CARD_FORMAT
    if "weights_file" in raw or "sha256" in raw:
        d["weights"] = {"file": raw.get("weights_file"), "sha256": raw.get("sha256")}
    ops = dict(raw.get("operating_points") or {})
    raw_points = dict(ops.get("raw") or {})
    if "eer" not in raw_points and "threshold" in raw:
        raw_points["eer"] = raw["threshold"]  # a card written before operating points existed
    if raw_points:
        ops["raw"] = raw_points
    asn = dict(raw.get("asnorm") or {})
    if "threshold" in asn:
        old = asn.pop("threshold")
        asn.pop("threshold_source", None)
        ops.setdefault("asnorm", {}).setdefault("eer", old)
    if asn:
        d["asnorm"] = asn
    if ops:
        d["operating_points"] = ops
    exports = {}
    if raw.get("onnx_file"):
        exports["fp32"] = {"file": raw["onnx_file"], "sha256": raw.get("onnx_sha256"), "parity": raw.get("onnx_parity")}
    if raw.get("onnx_int8_file"):
        exports["int8"] = {"file": raw["onnx_int8_file"], "sha256": raw.get("onnx_int8_sha256"),
                           "parity": raw.get("onnx_int8_parity"), "metrics": raw.get("onnx_int8_metrics"),
                           "calibration_data": raw.get("onnx_int8_calibration")}
    if exports:
        d["exports"] = exports
    log.debug("%s: migrated a first-format model card", path)
    return d


@dataclass(frozen=True)
class ModelCard:
    """A validated model card. Load with :meth:`load`; change with :meth:`replace`; write with :meth:`save`.

    ``arch`` is the registry name of the architecture (JSON key ``model``) and ``model_options`` its open
    options dict, passed as is to :func:`nestspk.models.build_model`. ``frontend`` holds the
    :class:`~nestspk.features.FrontendConfig` fields (:meth:`frontend_config` builds it, so cards may carry
    fields that a newer front end adds). ``path`` is the card file; relative file names resolve against it.
    """

    path: Path
    name: str
    arch: str
    model_options: dict[str, Any]
    frontend: dict[str, Any]
    embed_dim: int
    weights: FileRef
    operating_points: dict[str, dict[str, float]] = field(default_factory=dict)
    operating_points_fitted_on: str | None = None
    parameters: int | None = None
    metrics: dict = field(default_factory=dict)
    metrics_note: str | None = None
    training: dict | None = None
    cohort: dict | None = None
    asnorm: dict = field(default_factory=dict)
    calibration: dict | None = None
    exports: dict[str, Export] = field(default_factory=dict)
    lists: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LISTS))

    # -- reading ---------------------------------------------------------------------
    @classmethod
    def load(cls, model: str | os.PathLike = DEFAULT_MODEL) -> "ModelCard":
        """The card of a shipped name/alias or of a ``.json`` (or ``.pt``/``.onnx`` beside it) path.

        Raises :class:`WeightsError` naming the card file and key for an unreadable or invalid card.
        """
        path = resolve_card(model)
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise WeightsError(f"{path}: unreadable model card ({type(e).__name__}: {str(e)[:200]})") from e
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: Any, path: str | os.PathLike) -> "ModelCard":
        """Validate a card's JSON object (either format); ``path`` is where it lives (for relative files)."""
        path = Path(path)
        if not isinstance(raw, dict):
            raise WeightsError(f"{path}: a model card must be a JSON object, got {type(raw).__name__}")
        fmt = raw.get("format")
        if fmt is None:
            raw = _migrate(raw, path)
        elif fmt != CARD_FORMAT:
            raise _fail(path, "format", f"unsupported card format {fmt!r}; this nestspk reads {CARD_FORMAT!r}")
        unknown = sorted(set(raw) - set(_KEYS))
        if unknown:
            raise _fail(path, unknown[0], f"unknown key (known: {list(_KEYS)})")
        frontend = dict(_need(raw, "frontend", dict, path))
        sr = frontend.get("sample_rate", TARGET_SAMPLE_RATE)
        if sr != TARGET_SAMPLE_RATE:
            raise _fail(path, "frontend.sample_rate", f"{sr!r} Hz; nestspk resamples all input to {TARGET_SAMPLE_RATE} Hz")
        embed_dim = _need(raw, "embed_dim", int, path)
        if embed_dim < 1:
            raise _fail(path, "embed_dim", f"must be >= 1, got {embed_dim}")
        ops_raw = raw.get("operating_points") or {}
        ops = _points(ops_raw, path, "operating_points")
        if "eer" not in ops.get("raw", {}):
            raise _fail(path, "operating_points.raw.eer", "missing (the default decision threshold)")
        exports = {}
        for prec, e in (raw.get("exports") or {}).items():
            if prec not in PRECISIONS:
                raise _fail(path, f"exports.{prec}", f"unknown precision; known: {list(PRECISIONS)}")
            ref = _file_ref(e, path, f"exports.{prec}")
            exports[prec] = Export(ref.file, ref.sha256, e.get("parity"), e.get("metrics"),
                                   _points(e["operating_points"], path, f"exports.{prec}.operating_points")
                                   if e.get("operating_points") else None, e.get("calibration_data"))
        cohort = raw.get("cohort")
        if cohort is not None:
            _file_ref(cohort, path, "cohort")
        lists = dict(DEFAULT_LISTS)
        lists.update({str(k): str(v) for k, v in (raw.get("lists") or {}).items()})
        params = raw.get("parameters")
        return cls(
            path=path, name=_need(raw, "name", str, path), arch=_need(raw, "model", str, path),
            model_options=dict(_need(raw, "model_options", dict, path)), frontend=frontend, embed_dim=embed_dim,
            weights=_file_ref(raw.get("weights"), path, "weights"), operating_points=ops,
            operating_points_fitted_on=ops_raw.get("fitted_on"), parameters=None if params is None else int(params),
            metrics=dict(raw.get("metrics") or {}), metrics_note=raw.get("metrics_note"), training=raw.get("training"),
            cohort=dict(cohort) if cohort is not None else None, asnorm=dict(raw.get("asnorm") or {}),
            calibration=raw.get("calibration"), exports=exports, lists=lists,
        )

    # -- derived ---------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        """The card's folder: relative file names in the card resolve against it."""
        return self.path.parent

    @property
    def sample_rate(self) -> int:
        """Input sample rate of the model (Hz); always :data:`nestspk.audio.TARGET_SAMPLE_RATE` (checked on load)."""
        return int(self.frontend.get("sample_rate", TARGET_SAMPLE_RATE))

    def resolve(self, relative: str | os.PathLike) -> Path:
        """A path named in the card (relative to the card's folder unless absolute)."""
        return self.dir / relative

    def list_path(self, which: str) -> Path:
        """The card's ``train``, ``dev`` or ``test`` list, resolved against the card's folder."""
        if which not in self.lists:
            raise WeightsError(f"{self.path}: model card names no {which!r} list; it has {sorted(self.lists)}")
        return self.resolve(self.lists[which])

    def verified(self, ref: FileRef, what: str = "weights file") -> Path:
        """Path of ``ref`` after checking that it exists and that its sha256 matches the card."""
        path = self.resolve(ref.file)
        if not path.is_file():
            raise WeightsError(f"{path}: {what} named by the {self.name} card ({self.path}) is missing")
        digest = sha256_file(path)
        if digest != ref.sha256:
            raise WeightsError(
                f"{path}: sha256 {digest[:16]}... does not match the {self.name} card's {ref.sha256[:16]}... "
                f"({self.path}); the file is corrupted, truncated, tampered with, or re-exported without "
                "updating the card")
        return path

    def export(self, precision: str = "fp32") -> Export:
        """The card's ONNX export of ``precision``; WeightsError naming the command that creates it if absent."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision not in self.exports:
            flag = " --int8" if precision == "int8" else ""
            raise WeightsError(f"{self.name}: the model card {self.path} names no {precision} ONNX export "
                               f"(key 'exports.{precision}'); create one with: "
                               f"nestspk-export --model {self.name} --update-card{flag}")
        return self.exports[precision]

    def threshold(self, point: str = "eer", scale: str = "raw", precision: str = "fp32") -> float:
        """Threshold of operating point ``point`` on ``scale``; an export's own points when it has them."""
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        ops = self.operating_points
        if precision != "fp32":
            own = self.export(precision).operating_points
            if own is None:
                log.warning("%s: the %s export has no operating points of its own; using the fp32 ones",
                            self.name, precision)
            else:
                ops = own
        points = ops.get(scale, {})
        if point not in points:
            raise ValueError(f"unknown operating point {point!r} for {scale} scores of {self.name}; "
                             f"the card has {sorted(points)} (or pass a number)")
        return points[point]

    def frontend_config(self) -> "FrontendConfig":
        """The typed front-end config of this card (imports torch); unknown keys raise WeightsError."""
        from .features import FrontendConfig

        known = {f.name for f in dataclasses.fields(FrontendConfig)}
        unknown = sorted(set(self.frontend) - known)
        if unknown:
            raise _fail(self.path, f"frontend.{unknown[0]}",
                        f"unknown front-end field for this nestspk (known: {sorted(known)}); a newer card?")
        try:
            return FrontendConfig(**self.frontend)
        except (TypeError, ValueError) as e:
            raise _fail(self.path, "frontend", str(e)) from e

    def build_model(self) -> "SpeakerModel":
        """An untrained :class:`~nestspk.models.SpeakerModel` of this card's architecture and front end."""
        from .models import SpeakerModel, build_model

        fc = self.frontend_config()
        try:
            net = build_model(self.arch, self.model_options)
        except (ValueError, TypeError) as e:
            raise _fail(self.path, "model_options", f"invalid for architecture {self.arch!r} ({e})") from e
        if net.frontend_cfg != fc:
            n_mels = getattr(getattr(net.encoder, "cfg", None), "n_mels", fc.n_mels)
            if n_mels != fc.n_mels:
                raise _fail(self.path, "frontend.n_mels", f"{fc.n_mels} but the encoder takes {n_mels} mel bands")
            net = SpeakerModel(net.name, fc, net.encoder)
        return net

    # -- writing ---------------------------------------------------------------------
    def replace(self, **changes: Any) -> "ModelCard":
        """A copy with ``changes`` (dataclass fields); validated again through :meth:`from_dict`."""
        new = dataclasses.replace(self, **changes)
        return ModelCard.from_dict(new.to_dict(), new.path)

    def with_export(self, precision: str, export: Export) -> "ModelCard":
        """A copy naming ``export`` for ``precision``."""
        return self.replace(exports={**self.exports, precision: export})

    def to_dict(self) -> dict[str, Any]:
        """The card's JSON object in the current format (:data:`CARD_FORMAT`)."""
        d: dict[str, Any] = {"format": CARD_FORMAT, "name": self.name, "model": self.arch,
                             "model_options": self.model_options, "frontend": self.frontend,
                             "embed_dim": self.embed_dim}
        if self.parameters is not None:
            d["parameters"] = self.parameters
        d["weights"] = dataclasses.asdict(self.weights)
        ops: dict[str, Any] = {}
        if self.operating_points_fitted_on is not None:
            ops["fitted_on"] = self.operating_points_fitted_on
        d["operating_points"] = ops | self.operating_points
        for key in ("metrics", "metrics_note", "training", "cohort", "asnorm", "calibration"):
            v = getattr(self, key)
            if v:
                d[key] = v
        if self.exports:
            d["exports"] = {p: {k: v for k, v in dataclasses.asdict(e).items() if v is not None}
                            for p, e in self.exports.items()}
        if self.lists != DEFAULT_LISTS:
            d["lists"] = self.lists
        return d

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the card (current format) to ``path`` (default: where it was loaded) atomically; returns the path."""
        path = Path(path) if path is not None else self.path
        with atomic_write(path) as f:
            f.write((json.dumps(self.to_dict(), indent=1) + "\n").encode())
        log.info("wrote model card %s", path)
        return path
