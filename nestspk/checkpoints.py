"""Trained weights and their JSON model cards.

A model is shipped as ``<name>.pt`` (a plain ``{"model": state_dict}`` saved with
``torch.save``, loaded only with ``torch.load(weights_only=True)``) and
``<name>.json``, the card: architecture options, front-end config, sha256 of the
weights, calibrated threshold and measured metrics. The sha256 is verified
before anything is unpickled.
"""
from __future__ import annotations

import hashlib
import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import WeightsError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "nested_4level"
ALIASES = {"nested": "nested_4level", "resnetse34l": "resnetse34l_asp", "baseline": "resnetse34l_asp"}


def weights_dir() -> Path:
    """Folder of the shipped weights (``weights/`` in the repo, ``nestspk/weights`` when installed).

    Falls back to the repository layout when nestspk runs from a source tree on ``PYTHONPATH``
    without being installed (then the ``nestspk.weights`` package mapping does not exist).
    """
    try:
        return Path(str(resources.files("nestspk.weights")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "weights"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_card(model: str | Path) -> Path:
    """Card path for a shipped name/alias, a ``.json`` card path, or a ``.pt`` with a card beside it."""
    s = str(model)
    name = ALIASES.get(s, s)
    p = Path(s)
    if p.suffix == ".json":
        card = p
    elif p.suffix in (".pt", ".onnx"):
        card = p.with_suffix(".json")
    else:
        card = weights_dir() / f"{name}.json"
        if not card.is_file():
            shipped = sorted(c.stem for c in weights_dir().glob("*.json"))
            raise WeightsError(f"unknown model {s!r}: no card {card}; shipped models: {shipped}, aliases: {sorted(ALIASES)}")
    if not card.is_file():
        raise WeightsError(f"{s}: model card {card} not found")
    return card


_CARD_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str, "model": str, "model_options": dict, "frontend": dict, "weights_file": str, "sha256": str,
    "threshold": (int, float), "embed_dim": int}


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))


def read_card(card_path: str | Path) -> dict[str, Any]:
    card_path = Path(card_path)
    try:
        card = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise WeightsError(f"{card_path}: unreadable model card ({e})") from e
    if not isinstance(card, dict):
        raise WeightsError(f"{card_path}: a model card must be a JSON object, got {type(card).__name__}")
    for key, kind in _CARD_KEYS.items():
        if key not in card:
            raise WeightsError(f"{card_path}: model card lacks {key!r}")
        if isinstance(card[key], bool) or not isinstance(card[key], kind):
            raise WeightsError(f"{card_path}: model card key {key!r} must be {_kind_name(kind)}, got"
                               f" {type(card[key]).__name__} {str(card[key])[:40]!r}")
    card["_dir"] = str(card_path.parent)
    return card


def verified_path(card: dict, key: str = "weights_file", sha_key: str = "sha256") -> Path:
    """Path of a file named in the card, after checking it exists and its sha256 matches."""
    path = Path(card["_dir"]) / card[key]
    if not path.is_file():
        raise WeightsError(f"{path}: weights file named by the {card['name']} card is missing")
    digest = sha256_file(path)
    if digest != card[sha_key]:
        raise WeightsError(
            f"{path}: sha256 {digest[:16]}... does not match the card's {card[sha_key][:16]}...; "
            "the file is corrupted, truncated or tampered with")
    return path


def load_model(model: str | Path = DEFAULT_MODEL, device: str = "cpu"):
    """Load a trained :class:`~nestspk.models.SpeakerModel` (eval mode) and its card.

    Raises :class:`WeightsError` for a missing/unknown model, a sha256 mismatch,
    a file that is not a weights-only checkpoint, or weights of another architecture.
    """
    import pickle

    import torch

    from .features import FrontendConfig
    from .models import build_model

    card = read_card(resolve_card(model))
    path = verified_path(card)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a valid weights-only checkpoint ({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise WeightsError(f"{path}: expected a dict with a 'model' state dict")
    try:
        net = build_model(card["model"], card["model_options"])
    except (ValueError, TypeError) as e:
        raise WeightsError(f"{card['name']}: card describes an invalid architecture ({e})") from e
    if net.frontend_cfg != FrontendConfig.from_dict(card["frontend"]):
        raise WeightsError(f"{card['name']}: card front end {card['frontend']} does not match the model's")
    try:
        net.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path}: weights do not fit the {card['model']} architecture of the card ({str(e)[:300]})") from e
    return net.to(device).eval(), card
