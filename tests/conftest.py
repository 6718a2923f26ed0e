"""Shared fixtures: real speech from ../shared/data (or $NESTSPK_DATA)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def reliability_bench():
    """benchmarks/reliability.py as a module (its fuzz runners and helpers; the strategies are tests/fuzz_strategies.py)."""
    import importlib.util
    import sys

    name = "nestspk_reliability_bench"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "reliability.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def data_root() -> Path:
    return Path(os.environ.get("NESTSPK_DATA", REPO.parent / "shared" / "data"))


def training_lists_available() -> bool:
    """True when the corpora behind weights/lists/train.txt are under the data root (not the stand-in)."""
    first = (REPO / "weights" / "lists" / "train.txt").read_text().split("\n", 1)[0].split()[1]
    return (data_root() / first).is_file()


def _build_standin(root: Path) -> None:
    """Real speech from examples/ cut into LibriSpeech-style (16 kHz FLAC) and FSDD-style (8 kHz WAV) files.

    Used only when ../shared/data (or $NESTSPK_DATA) is absent, e.g. on a CI machine without the corpora,
    so that tests needing "some real recordings" still run; training-list tests skip instead.
    """
    import soundfile as sf

    from nestspk.audio import resample

    libri = root / "librispeech-snippets" / "train-clean-100"
    fsdd = root / "fsdd" / "recordings"
    libri.mkdir(parents=True)
    fsdd.mkdir(parents=True)
    names = {"121": "alpha", "1221": "bravo"}
    for i, f in enumerate(sorted(EXAMPLES.glob("*.flac"))):
        x, sr = sf.read(f, dtype="float32")
        spk = f.stem.split("_")[1]
        n = len(x) // 3
        for k in range(3):
            sf.write(libri / f"{spk}-{100 + i}-{k:04d}.flac", x[k * n:(k + 1) * n], sr)
        y = resample(x, sr, 8000)
        m = len(y) // 8
        for k in range(8):
            sf.write(fsdd / f"{k}_{names[spk]}_{i}.wav", (y[k * m:(k + 1) * m] * 32767).astype(np.int16), 8000)


def pytest_configure(config) -> None:
    if not (data_root() / "librispeech-snippets" / "train-clean-100").is_dir():
        import atexit
        import shutil
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="nestspk_standin_data_"))
        atexit.register(shutil.rmtree, root, True)
        _build_standin(root)
        os.environ["NESTSPK_DATA"] = str(root)


@pytest.fixture(scope="session")
def librispeech_files() -> list[Path]:
    files = sorted((data_root() / "librispeech-snippets" / "train-clean-100").glob("*.flac"))
    if not files:
        pytest.skip(f"no LibriSpeech snippets under {data_root()}")
    return files


@pytest.fixture(scope="session")
def training_data() -> None:
    if not training_lists_available():
        pytest.skip(f"the corpora of weights/lists/train.txt are not under {data_root()}")


@pytest.fixture(scope="session")
def example_files() -> dict[str, Path]:
    return {
        "a1": EXAMPLES / "speaker_121_session1.flac",
        "a2": EXAMPLES / "speaker_121_session2.flac",
        "b": EXAMPLES / "speaker_1221.flac",
    }


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    """4 s of real speech (float32, 16 kHz) from the bundled example."""
    import soundfile as sf

    x, sr = sf.read(EXAMPLES / "speaker_121_session1.flac", dtype="float32")
    assert sr == 16000
    return x[: 4 * sr]


@pytest.fixture(scope="module")
def nested_verifier():
    from nestspk import Verifier

    return Verifier("nested", device="cpu")
