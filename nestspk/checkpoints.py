"""Trained weights: load a card's ``.pt`` safely into the model the card describes.

A model is shipped as ``<name>.pt`` (a plain ``{"model": state_dict}`` saved with
``torch.save``, loaded only with ``torch.load(weights_only=True)``) and ``<name>.json``,
the :class:`~nestspk.card.ModelCard`. The sha256 is verified before anything is
unpickled, and the state dict must fit the card's architecture exactly.
"""
from __future__ import annotations

import logging
import os

from .card import ALIASES, DEFAULT_MODEL, ModelCard, resolve_card, sha256_file, weights_dir
from .errors import WeightsError

log = logging.getLogger(__name__)

__all__ = ["load_model", "ModelCard", "ALIASES", "DEFAULT_MODEL", "resolve_card", "sha256_file", "weights_dir"]


def load_model(model: str | os.PathLike | ModelCard = DEFAULT_MODEL, device: str = "cpu"):
    """Load a trained :class:`~nestspk.models.SpeakerModel` (eval mode, on ``device``, with the fused-kernel inference
    transform :func:`nestspk.models.fused.apply`) and its card.

    ``model``: a :class:`ModelCard` or anything :meth:`ModelCard.load` accepts. Returns ``(model, card)``.
    Raises :class:`WeightsError` for a missing/unknown model, a sha256 mismatch, a file that is not a
    weights-only checkpoint, or weights of another architecture.
    """
    import pickle

    import torch

    card = model if isinstance(model, ModelCard) else ModelCard.load(model)
    path = card.verified(card.weights)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a valid weights-only checkpoint ({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise WeightsError(f"{path}: expected a dict with a 'model' state dict")
    net = card.build_model()
    try:
        net.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path}: weights do not fit the {card.arch} architecture of the card ({str(e)[:300]})") from e
    from .models import fused

    return fused.apply(net.to(device).eval()), card
