"""Weights and model cards are verified before use (GitHub issue #6).

Every test works on copies of the shipped ``weights/nested_4level.{pt,json,onnx}`` in tmp_path.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from nestspk.card import ModelCard
from nestspk.checkpoints import load_model, sha256_file, weights_dir
from nestspk.errors import NestspkError, WeightsError

NAME = "nested_4level"


def _copy(tmp_path: Path, *suffixes: str) -> Path:
    """Copy the shipped card and files with ``suffixes`` into tmp_path; return the card copy."""
    for s in (".json", *suffixes):
        shutil.copy(weights_dir() / f"{NAME}{s}", tmp_path / f"{NAME}{s}")
    return tmp_path / f"{NAME}.json"


def _edit_card(card: Path, sha256: str | None = None, **changes) -> None:
    """Set top-level card keys; ``sha256`` sets the weights' checksum (``weights.sha256`` in card format 2)."""
    d = json.loads(card.read_text())
    d.update(changes)
    if sha256 is not None:
        if "weights" in d:
            d["weights"]["sha256"] = sha256
        else:
            d["sha256"] = sha256
    card.write_text(json.dumps(d))


def _flip_byte(path: Path, pos: int) -> None:
    b = bytearray(path.read_bytes())
    b[pos] ^= 0x01
    path.write_bytes(bytes(b))


class _Payload:
    """Unpickling this calls os.system to touch a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_intact_copy_loads(tmp_path: Path) -> None:
    """Control: the untouched copy loads, so the failures below come from the damage."""
    net, card = load_model(_copy(tmp_path, ".pt"))
    assert card.name == NAME and not net.training
    assert sha256_file(tmp_path / f"{NAME}.pt") == card.weights.sha256


def test_tampered_byte_rejected(tmp_path: Path) -> None:
    card = _copy(tmp_path, ".pt")
    pt = tmp_path / f"{NAME}.pt"
    _flip_byte(pt, pt.stat().st_size // 2)
    with pytest.raises(WeightsError, match="sha256") as ei:
        load_model(card)
    assert str(pt) in str(ei.value)


def test_truncated_rejected(tmp_path: Path) -> None:
    card = _copy(tmp_path, ".pt")
    pt = tmp_path / f"{NAME}.pt"
    pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 3])
    with pytest.raises(WeightsError, match="sha256"):
        load_model(card)
    # even with the card's sha256 updated to the truncated file, it is not a valid checkpoint
    _edit_card(card, sha256=sha256_file(pt))
    with pytest.raises(WeightsError, match="not a valid weights-only checkpoint"):
        load_model(card)


def test_other_architecture_rejected(tmp_path: Path) -> None:
    card = _copy(tmp_path, ".pt")
    opts = json.loads(card.read_text())["model_options"]
    _edit_card(card, model_options={**opts, "channels": [16, 32, 64, 96]})
    with pytest.raises(WeightsError, match="do not fit"):
        load_model(card)


def test_pickle_payload_rejected_and_not_executed(tmp_path: Path) -> None:
    card = _copy(tmp_path)
    marker = tmp_path / "PWNED"
    pt = tmp_path / f"{NAME}.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "x": _Payload(marker)}, pt)
    _edit_card(card, sha256=sha256_file(pt))  # the sha256 check passes; weights_only must stop it
    with pytest.raises(WeightsError, match="not a valid weights-only checkpoint"):
        load_model(card)
    assert not marker.exists()


def test_missing_weights_file(tmp_path: Path) -> None:
    card = _copy(tmp_path)
    with pytest.raises(WeightsError, match="missing"):
        load_model(card)


def test_unknown_model_name() -> None:
    with pytest.raises(WeightsError, match="unknown model 'no_such_model'.*nested_4level"):
        load_model("no_such_model")


@pytest.mark.parametrize("text", ["{not json", "", "\xff\xfe", '{"name": "x"}'])
def test_card_not_json_or_incomplete(tmp_path: Path, text: str) -> None:
    card = tmp_path / "broken.json"
    card.write_text(text, encoding="latin-1")
    with pytest.raises(WeightsError, match=r"broken\.json"):
        ModelCard.load(card)
    with pytest.raises(WeightsError):
        load_model(card)


def test_card_missing(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "absent.json")


def test_onnx_tampered_rejected(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from nestspk.runtime.onnx_runtime import OnnxEmbedder

    card = _copy(tmp_path, ".onnx")
    OnnxEmbedder(card)  # control: the intact copy loads
    onnx = tmp_path / f"{NAME}.onnx"
    _flip_byte(onnx, onnx.stat().st_size - 100)
    with pytest.raises(WeightsError, match="sha256") as ei:
        OnnxEmbedder(card)
    assert str(onnx) in str(ei.value)
    onnx.unlink()
    with pytest.raises(WeightsError, match="missing"):
        OnnxEmbedder(card)


def test_weights_error_is_nestspk_error() -> None:
    assert issubclass(WeightsError, NestspkError)
