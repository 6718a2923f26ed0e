"""Shared fixtures: real speech from ../shared/data (or $NESTSPK_DATA)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def data_root() -> Path:
    return Path(os.environ.get("NESTSPK_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def librispeech_files() -> list[Path]:
    files = sorted((data_root() / "librispeech-snippets" / "train-clean-100").glob("*.flac"))
    if not files:
        pytest.skip(f"no LibriSpeech snippets under {data_root()}")
    return files


@pytest.fixture(scope="session")
def example_files() -> dict[str, Path]:
    return {
        "a1": EXAMPLES / "speaker_8609_part1.flac",
        "a2": EXAMPLES / "speaker_8609_part2.flac",
        "b": EXAMPLES / "speaker_1841.flac",
    }


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    """4 s of real speech (float32, 16 kHz) from the bundled example."""
    import soundfile as sf

    x, sr = sf.read(EXAMPLES / "speaker_8609_part1.flac", dtype="float32")
    assert sr == 16000
    return x[: 4 * sr]


@pytest.fixture(scope="module")
def nested_verifier():
    from nestspk import Verifier

    return Verifier("nested", device="cpu")
