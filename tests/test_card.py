"""The typed model card (nestspk.card): validation, migration of first-format cards, atomic writes."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from nestspk.card import CARD_FORMAT, Export, ModelCard, resolve_card
from nestspk.errors import WeightsError

NAME = "nested_4level"


def _raw() -> dict:
    return json.loads(resolve_card(NAME).read_text())


def _write(tmp_path: Path, raw: dict, name: str = "c.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(raw))
    return p


def test_first_format_card_is_migrated_with_one_eer_threshold() -> None:
    raw = _raw()
    card = ModelCard.load(NAME)
    if "format" not in raw:  # the shipped card is still in the first format
        assert raw["threshold"] != raw["operating_points"]["raw"]["eer"]  # the two "EER thresholds" it held
    assert card.threshold() == card.operating_points["raw"]["eer"] == _raw_eer(raw)
    d = card.to_dict()
    assert d["format"] == CARD_FORMAT
    assert not {"threshold", "weights_file", "sha256", "onnx_file", "onnx_int8_file"} & set(d)
    assert "threshold" not in d.get("asnorm", {})
    assert card.weights.file == f"{NAME}.pt" and card.sample_rate == 16000
    assert set(card.exports) == {"fp32", "int8"}


def _raw_eer(raw: dict) -> float:
    return raw["operating_points"]["raw"]["eer"]


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    card = ModelCard.load(NAME)
    out = card.save(tmp_path / "copy.json")
    assert [p.name for p in tmp_path.iterdir()] == ["copy.json"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would create it (mkstemp alone gives 0600)
    again = ModelCard.load(out)
    assert again.to_dict() == card.to_dict()
    assert again.path == out and again.dir == tmp_path


@pytest.mark.parametrize("edit,key", [
    (lambda r: r["operating_points"]["raw"].__setitem__("eer", math.nan), "operating_points.raw.eer"),
    (lambda r: r["operating_points"]["raw"].__setitem__("far_0.01", 1.5), "operating_points.raw.far_0.01"),
    (lambda r: r["operating_points"].__setitem__("znorm", {"eer": 0.1}), "operating_points.znorm"),
    (lambda r: r.__setitem__("surprise", 1), "surprise"),
    (lambda r: r.pop("embed_dim"), "embed_dim"),
    (lambda r: r.__setitem__("embed_dim", "512"), "embed_dim"),
    (lambda r: r["weights"].__setitem__("sha256", "abc"), "weights.sha256"),
    (lambda r: r["frontend"].__setitem__("sample_rate", 8000), "frontend.sample_rate"),
])
def test_invalid_card_names_file_and_key(tmp_path: Path, edit, key: str) -> None:
    raw = _raw()
    edit(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(WeightsError) as ei:
        ModelCard.load(path)
    assert str(path) in str(ei.value) and repr(key) in str(ei.value), str(ei.value)


def test_asnorm_thresholds_may_exceed_one(tmp_path: Path) -> None:
    raw = _raw()
    raw["operating_points"]["asnorm"]["far_0.001"] = 3.5  # AS-norm scores are unbounded
    assert ModelCard.load(_write(tmp_path, raw)).threshold("far_0.001", "asnorm") == 3.5


def test_unknown_frontend_field_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    raw = _raw()
    raw["frontend"]["wobble"] = 1
    card = ModelCard.load(_write(tmp_path, raw))  # torch-free load accepts it ...
    with pytest.raises(WeightsError, match=r"'frontend\.wobble'.*unknown front-end field"):
        card.frontend_config()  # ... building the front end names it


def test_build_model_uses_the_cards_front_end(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    raw = _raw()
    raw["frontend"]["hop_length"] = 320  # a model trained with a 20 ms hop
    net = ModelCard.load(_write(tmp_path, raw)).build_model()
    assert net.frontend_cfg.hop_length == 320 and net.frontend.cfg.hop_length == 320


def test_lists_resolve_beside_the_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    card = ModelCard.load(NAME)
    assert card.list_path("test") == resolve_card(NAME).parent / "lists" / "test_trials.txt"
    assert card.list_path("test").is_file()


def test_int8_export_uses_its_own_operating_points(tmp_path: Path) -> None:
    card = ModelCard.load(NAME)
    e = card.export("int8")
    own = {"raw": {"eer": 0.25, "far_0.01": 0.4}}
    new = card.with_export("int8", Export(e.file, e.sha256, e.parity, e.metrics, own, e.calibration_data))
    assert new.threshold("eer", "raw", "int8") == 0.25
    assert new.threshold("eer", "raw", "fp32") == card.threshold()
    saved = ModelCard.load(new.save(tmp_path / f"{NAME}.json"))
    assert saved.exports["int8"].operating_points == own


def test_tampered_copy_and_resolve(tmp_path: Path) -> None:
    shutil.copy(resolve_card(NAME), tmp_path / f"{NAME}.json")
    card = ModelCard.load(tmp_path / f"{NAME}.pt")  # a .pt path finds the card beside it
    with pytest.raises(WeightsError, match="missing"):
        card.verified(card.weights)
