"""``nestspk-export`` keeps cards and files consistent: card updated with the file it names, inputs checked first."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from nestspk.card import ModelCard, sha256_file  # noqa: E402
from nestspk.export import STRIPPED_NODE_METADATA, main  # noqa: E402

TINY = {"channels": [8, 16, 16, 32], "blocks": [1, 1, 1, 1], "fusion_dim": 32, "embed_dim": 64}


def _tiny_card(folder: Path) -> Path:
    """A trained-looking tiny nested model: tiny.pt and its card tiny.json (first card format, as packaged)."""
    from nestspk.models import build_model

    torch.manual_seed(0)
    net = build_model("nested", TINY)
    folder.mkdir(parents=True, exist_ok=True)
    pt = folder / "tiny.pt"
    torch.save({"model": net.state_dict()}, pt)
    card = ModelCard.from_dict({
        "name": "tiny", "model": "nested", "model_options": TINY, "frontend": net.frontend_cfg.to_dict(),
        "embed_dim": 64, "weights_file": "tiny.pt", "sha256": sha256_file(pt), "threshold": 0.5}, folder / "tiny.json")
    return card.save()


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A tiny card exported with the default output (beside the card)."""
    card = _tiny_card(tmp_path_factory.mktemp("tiny"))
    assert main(["--model", str(card), "--no-parity"]) == 0
    return card


def test_default_export_updates_the_card(exported: Path) -> None:
    from nestspk.runtime.onnx_runtime import OnnxEmbedder

    card = ModelCard.load(exported)
    fp32 = card.export("fp32")
    assert fp32.file == "tiny.onnx" and sha256_file(card.resolve(fp32.file)) == fp32.sha256
    assert OnnxEmbedder(card).embed_dim == 64  # the ONNX backend runs with the new file
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"
    umask = os.umask(0)
    os.umask(umask)
    for p in (exported, exported.with_suffix(".onnx")):
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, f"{p}: mode {oct(p.stat().st_mode)}"


def test_export_strips_irreproducible_node_metadata(exported: Path) -> None:
    proto = onnx.load(str(exported.with_suffix(".onnx")))
    keys = {p.key for n in proto.graph.node for p in n.metadata_props}
    assert not keys & set(STRIPPED_NODE_METADATA), keys
    assert "pkg.torch.onnx.name_scopes" in keys  # the int8 quantiser selects encoder nodes by these
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["nestspk.model"] == "tiny"


def test_exported_graph_keeps_the_level_floor_for_digital_silence(exported: Path) -> None:
    """An all-zero row: the graph must keep the mean-square floor of the level normalisation (an ``+ 1e-10`` was
    dropped by the exporter's optimiser, and 0 * inf gave NaN). Its embedding is ill-conditioned (features that
    are rounding noise), so only finiteness is checked; the speech row beside it must match torch."""
    from nestspk.checkpoints import load_model
    from nestspk.runtime.onnx_runtime import OnnxEmbedder

    x = np.zeros((2, 16000), dtype=np.float32)
    x[1] = np.sin(np.arange(16000) * 0.05) * 0.1
    got = OnnxEmbedder(exported).embed_batch(x)
    assert np.isfinite(got).all()
    model, _ = load_model(exported)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model(torch.from_numpy(x[1:])), dim=1).numpy()
    np.testing.assert_allclose(got[1:], ref, atol=1e-4)


def test_reexport_elsewhere_is_byte_identical_and_leaves_the_card(exported: Path, tmp_path: Path) -> None:
    before = _snapshot(exported.parent)
    out = tmp_path / "other" / "copy.onnx"
    out.parent.mkdir()
    assert main(["--model", str(exported), "-o", str(out), "--no-parity"]) == 0
    assert _snapshot(exported.parent) == before  # card and files untouched
    assert sha256_file(out) == ModelCard.load(exported).export("fp32").sha256


def test_int8_without_data_fails_before_writing(exported: Path, tmp_path: Path, capsys) -> None:
    before = _snapshot(exported.parent)
    rc = main(["--model", str(exported), "--int8", "--data", str(tmp_path / "no_data")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "nothing written" in err, err
    assert str(tmp_path / "no_data") in err and "train" in err  # names the root and the missing calibration list
    assert _snapshot(exported.parent) == before


def test_export_command_prints_no_warning_noise(tmp_path: Path) -> None:
    import subprocess
    import sys

    card = _tiny_card(tmp_path / "t")
    res = subprocess.run([sys.executable, "-m", "nestspk.export", "--model", str(card), "--no-parity"],
                         capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parent.parent)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stderr.strip() == "", res.stderr[-2000:]  # no torchvision / LeafSpec / exporter chatter
    assert '"model": "tiny"' in res.stdout


def test_export_without_torch_names_the_extra() -> None:
    from torchless import run_without_torch

    res = run_without_torch("""
        from nestspk.export import main

        raise SystemExit(main(["--model", "nested", "--no-parity"]))
    """)
    assert res.returncode == 1 and "pip install 'nestspk[export]'" in res.stderr, res.stderr[-2000:]


def test_export_from_another_checkout_path_is_byte_identical(exported: Path, tmp_path: Path) -> None:
    """Node metadata held source paths: an export from a copy of the package elsewhere must give the same bytes."""
    import shutil
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    copy = tmp_path / "elsewhere" / "checkout"
    shutil.copytree(repo / "nestspk", copy / "nestspk", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "copy.onnx"
    res = subprocess.run([sys.executable, "-m", "nestspk.export", "--model", str(exported), "-o", str(out),
                          "--no-parity"], capture_output=True, text=True, timeout=600, cwd=copy,
                         env={**os.environ, "PYTHONPATH": str(copy)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert sha256_file(out) == ModelCard.load(exported).export("fp32").sha256
