"""Smoke tests of the benchmark's peer encoders (benchmarks/peers.py) on CPU with tiny inputs."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import peers  # noqa: E402

DIMS = {"ecapa1024": 192, "ecapa512": 192, "resnet34": 256, "ge2e": 256}


@pytest.mark.parametrize("name", sorted(peers.PEERS))
def test_peer_shapes_and_parameter_counts(name: str) -> None:
    m = peers.build_peer(name)
    # the published count (shared/notes/peers.md), given to one decimal in millions
    assert peers.count_params(m) / 1e6 == pytest.approx(peers.PUBLISHED_PARAMS_M[name], abs=0.05)
    with torch.inference_mode():
        e = m.embed(0.1 * torch.randn(2, 8000))  # 0.5 s
    assert e.shape == (2, DIMS[name])
    assert torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.isfinite(e).all()


def test_peers_are_deterministic_and_differ_between_inputs() -> None:
    a, b = peers.build_peer("ecapa512", seed=3), peers.build_peer("ecapa512", seed=3)
    x = 0.1 * torch.randn(2, 8000)
    with torch.inference_mode():
        ea, eb = a.embed(x), b.embed(x)
    assert torch.equal(ea, eb)
    assert float((ea[0] - ea[1]).abs().max()) > 1e-4


def test_ge2e_partials_follow_resemblyzer_slicing() -> None:
    # 8 s at 10 ms: 801 frames; step round(16000 / 1.3 / 160) = 77; last start 693 covers 108/160 < 0.75: dropped
    assert peers.partial_starts(801) == list(range(0, 694, 77))[:-1]
    assert peers.partial_starts(100) == [0]  # shorter than one partial: one (padded) partial
    with torch.inference_mode():
        e = peers.build_peer("ge2e").embed(0.1 * torch.randn(1, 4000))
    assert e.shape == (1, 256)


def test_mel_filterbank_is_a_partition_in_the_middle() -> None:
    fb = peers.mel_filterbank(512, 40)
    assert fb.shape == (257, 40) and fb.min() >= 0
    s = fb.sum(axis=1)
    mid = s[20:200]  # adjacent triangles sum to 1 between the first and last centre frequencies
    np.testing.assert_allclose(mid, 1.0, atol=1e-4)


@pytest.mark.skipif(not peers.resemblyzer_available(), reason="resemblyzer not installed")
def test_resemblyzer_embedder_on_speechlike_noise() -> None:
    emb = peers.ResemblyzerEmbedder()
    e = emb.embed_batch(0.1 * np.random.default_rng(0).standard_normal((2, 16000)).astype(np.float32))
    assert e.shape == (2, 256)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
