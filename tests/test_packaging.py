"""Packaging: a light default install (no torch), the extras, LICENSE and examples in the sdist."""
from __future__ import annotations

import configparser
import re
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def _names(block: str) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r.strip(), maxsplit=1)[0].lower() for r in block.splitlines()
            if r.strip() and not r.strip().startswith("#")}


def test_default_install_is_light() -> None:
    assert _names(_cfg()["options"]["install_requires"]) == {"numpy", "soundfile", "onnxruntime", "pyyaml", "tqdm"}


def test_extras() -> None:
    extras = {k: _names(v) for k, v in _cfg()["options.extras_require"].items()}
    assert extras["torch"] == {"torch"} and extras["gpu"] == {"onnxruntime-gpu"}
    assert extras["train"] >= {"torch", "torchaudio", "tensorboard", "matplotlib", "pyyaml"}
    assert extras["export"] >= {"torch", "onnx", "onnxscript"}
    assert extras["test"] >= {"pytest", "hypothesis", "torch", "torchaudio", "onnx", "onnxscript"}
    assert "torchaudio" not in extras["torch"] | extras["export"]  # torchaudio only where its compiled part is not needed


def test_license_matches_setup_cfg() -> None:
    assert _cfg()["metadata"]["license"] == "MIT"
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


def test_resolution_check_reads_the_default_requirements() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("resolve_platforms", REPO / ".ci" / "resolve_platforms.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert _names("\n".join(mod.default_requirements())) == _names(_cfg()["options"]["install_requires"])
    assert {"macOS arm64", "Linux aarch64"} <= set(mod.PLATFORMS)


def test_sdist_has_license_examples_and_runtime(tmp_path: Path) -> None:
    build_meta = pytest.importorskip("setuptools.build_meta")
    import os

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        name = build_meta.build_sdist(str(tmp_path))
    finally:
        os.chdir(cwd)
    with tarfile.open(tmp_path / name) as tar:
        files = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {"LICENSE", "examples/verify_example.py", "examples/speaker_1221.flac", "nestspk/runtime/__init__.py",
            "nestspk/card.py", "weights/nested_4level.json"} <= files
