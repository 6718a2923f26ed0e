"""Tests for the benchmark harness (benchmarks/bench.py): tiny CPU runs, ratio and target logic.

No timings are asserted: speed depends on the machine.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import bench, embedders  # noqa: E402
from nestspk import bench as entry  # noqa: E402

TINY = ["--device", "cpu", "--durations", "0.5", "--batch", "1,2", "--rounds", "3", "--block", "2",
        "--warmup", "3", "--weights", "random", "-q"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    args = TINY + ["--models", "nested,resnetse34l,ge2e", "--json", str(out / "r.json"),
                   "--markdown", str(out / "r.md")]
    assert entry.main(args) == 0  # through the thin package entry point
    return json.loads((out / "r.json").read_text()), out


def test_tiny_run_rows(tiny_run: tuple[dict, Path]) -> None:
    doc, out = tiny_run
    rows = doc["rows"]
    assert {(r["model"], r["batch"]) for r in rows} == {(m, b) for m in ("nested", "resnetse34l", "ge2e") for b in (1, 2)}
    for r in rows:
        assert r["error"] is None, r["error"]
        assert r["rounds"] == 3 and r["repeats"] == 6 and len(r["round_p50_ms"]) == 3
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["utt_per_s"] == pytest.approx(r["batch"] / (r["p50_ms"] / 1e3))
        assert r["max_cos_err"] == pytest.approx(0.0, abs=1e-6)  # fp32 eager against itself
        assert "TorchEmbedder" in r["embedder"]  # the Verifier's embedder class, not a harness runner
        assert (r["x_nested"] is None) == (r["model"] == "nested")
    md = (out / "r.md").read_text()
    assert md.startswith("# nestspk-bench results") and "GE2E LSTM" in md


def test_merge_rerenders(tiny_run: tuple[dict, Path], tmp_path: Path) -> None:
    _, out = tiny_run
    assert bench.main(["--merge", str(out / "r.json"), str(out / "r.json"), "--json", str(tmp_path / "m.json"),
                       "-q"]) == 0
    merged = json.loads((tmp_path / "m.json").read_text())
    assert len(merged["rows"]) == 2 * len(tiny_run[0]["rows"])


def test_budget_skips_and_shrinks(tmp_path: Path) -> None:
    cfg = bench.BenchConfig(device="cpu", models=("nested", "ge2e"), durations=(0.5,), batches=(1, 2, 4),
                            rounds=50, block=50, warmup=3, weights="random", budget_s=1e-9)
    rows = bench.run_sweep(cfg)
    assert len(rows) == 6 and all(r["error"] == "skipped: time budget spent" for r in rows)
    ready = [("a", {"_call_s": 0.01}, None), ("b", {"_call_s": 0.01}, None)]
    assert bench._fit(cfg, ready, 2.0) == (50, 1)  # 2 s / (0.02 s * 1.15) = 86 calls -> 50 rounds x 1
    ready = [("a", {"_call_s": 0.1}, None)]
    assert bench._fit(cfg, ready, 1.0) == (8, 1)


def test_cuda_graph_mode_on_cpu_is_an_error_row() -> None:
    cfg = bench.BenchConfig(device="cpu", models=("nested",), durations=(0.5,), modes=("cuda_graph",),
                            rounds=1, block=1, weights="random")
    (row,) = bench.run_sweep(cfg)
    assert "needs a CUDA device" in row["error"]


def test_embedders_use_the_verifier_runtime() -> None:
    import torch

    from benchmarks import peers

    m = peers.build_peer("ge2e")
    emb = embedders.build_embedder("ge2e", "torch", "cpu", "fp32", module=m)
    x = np.random.default_rng(0).standard_normal((2, 16000)).astype(np.float32) * 0.1
    with torch.inference_mode():
        ref = m.embed(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(emb.embed_batch(x), ref, atol=1e-6)
    with pytest.raises(ValueError, match="shipped card"):
        embedders.build_embedder("ge2e", "onnx", "cpu", "fp32", module=m)


@pytest.mark.parametrize("mode,expected", [("fp32", "fp32"), ("eager", "fp32"), ("fp16+cuda_graph", "cuda_graph+fp16"),
                                           ("fp16+channels_last+cuda_graph", "cuda_graph+channels_last+fp16")])
def test_canonical_mode(mode: str, expected: str) -> None:
    assert embedders.canonical_mode(mode) == expected


@pytest.mark.parametrize("mode", ["int9", "bf16+fp16"])
def test_bad_modes_rejected(mode: str) -> None:
    with pytest.raises(ValueError):
        embedders.parse_mode(mode)


# ----------------------------------------------------------------------------- ratios and targets


def _row(model: str, p50: float, *, device: str = "cuda", backend: str = "torch", mode: str = "fp32",
         threads: int | None = None, duration: float = 8.0, batch: int = 1, cos: float = 0.0,
         rounds: list[float] | None = None) -> dict:
    s = bench.Subject(model, model, 1000, "random")
    r = bench._row(s, backend, mode, device, threads, duration, batch)
    r.update(p50_ms=p50, utt_per_s=batch / (p50 / 1e3), max_cos_err=cos, round_p50_ms=rounds or [])
    return r


def test_ratio_is_median_of_round_ratios() -> None:
    n = _row("nested", 1.0, rounds=[1.0, 1.0, 1.0])
    e = _row("ecapa512", 1.0, rounds=[2.0, 0.5, 3.0])  # per-round ratios 2, 0.5, 3 -> median 2
    other = _row("ecapa512", 5.0, batch=2)  # no nested row in its workload
    bench.add_ratios([n, e, other])
    assert e["x_nested"] == pytest.approx(2.0)
    assert n["x_nested"] is None and other["x_nested"] is None


def test_targets_from_the_data_file() -> None:
    targets = {t["id"]: t for t in bench.load_targets()}
    assert {"cuda_b1_vs_peers", "cuda_4s_throughput", "cpu_ort2_fp32", "cpu_ort2_int8"} <= set(targets)
    rows = [_row("nested", 0.5, rounds=[0.5]), _row("ge2e", 0.6, rounds=[0.6]), _row("ecapa512", 0.45, rounds=[0.45]),
            _row("nested", 2.0, duration=4.0, batch=128, cos=5e-4), _row("ge2e", 3.0, duration=4.0, batch=128),
            _row("nested", 1.0, duration=4.0, batch=256, cos=5e-3)]  # fastest, but not within 1e-3
    bench.add_ratios(rows)
    got = {t["id"]: t for t in bench.evaluate_targets(rows)}
    assert not got["cuda_b1_vs_peers"]["passed"] and "ecapa512" in got["cuda_b1_vs_peers"]["detail"]
    assert got["cuda_b1_exact_0.6ms"]["passed"]
    thr = got["cuda_4s_throughput"]
    assert thr["passed"] and "64000 utt/s" in thr["detail"] and "ge2e best 42667" in thr["detail"]
    assert "cpu_ort2_fp32" not in got  # no CPU rows: not applicable


def test_bad_target_file_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("targets:\n  - id: x\n    kind: fastest\n")
    with pytest.raises(ValueError, match="kind must be one of"):
        bench.load_targets(p)


def test_entry_point_names_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("NESTSPK_BENCHMARKS", str(tmp_path))
    assert entry.find_benchmarks() == REPO / "benchmarks"  # falls back to the checkout's folder
    monkeypatch.setattr(entry, "__file__", str(tmp_path / "site" / "nestspk" / "bench.py"))
    assert entry.main(["--help"]) == 2
    assert "benchmarks/ folder" in capsys.readouterr().err
