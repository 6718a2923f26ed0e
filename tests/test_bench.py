"""Tests for nestspk.bench: the harness runs at tiny sizes and the ratio / target logic is right.

No timings are asserted: speed depends on the machine.
"""
from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest

from nestspk import bench

logger = logging.getLogger(__name__)

ROW_KEYS = {"model", "weights", "backend", "mode", "device", "threads", "duration_s", "batch", "params",
            "p50_ms", "p90_ms", "p99_ms", "utt_per_s", "rtf", "peak_mb", "gflops_per_utt", "max_cos_err",
            "exact", "repeats", "error", "ratio_vs_baseline"}


def _row(model: str, p50: float, *, backend: str = "torch", mode: str = "fp32", device: str = "cuda",
         threads: int | None = None, duration: float = 8.0, batch: int = 1, cos_err: float | None = 0.0,
         error: str | None = None) -> dict:
    """A synthetic result row."""
    r = bench._row_base(model, "random", backend, mode, device, threads, duration, batch, 1000)
    if error:
        r["error"] = error
        return r
    r.update(p50_ms=p50, p90_ms=p50 * 1.1, p99_ms=p50 * 1.2, max_cos_err=cos_err,
             utt_per_s=batch / (p50 / 1e3), rtf=p50 / 1e3 / (batch * duration))
    return r


def _lines(targets: list[bench.Target]) -> dict[str, bench.Target]:
    return {t.name: t for t in targets}


# ----------------------------------------------------------------------------- the harness on CPU


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    backend = "all" if importlib.util.find_spec("onnxruntime") else "torch"
    args = ["--device", "cpu", "--backend", backend, "--durations", "0.5", "--batch", "1,2",
            "--repeats", "3", "--warmup", "1", "--ort-threads", "1", "--weights", "random",
            "--json", str(out / "r.json"), "--markdown", str(out / "r.md"), "--plot", str(out / "r.png"), "-q"]
    assert bench.main(args) == 0
    return json.loads((out / "r.json").read_text()), out


def test_cpu_run_emits_valid_json(tiny_run: tuple[dict, Path]) -> None:
    doc, out = tiny_run
    assert {"environment", "config", "rows", "targets"} <= set(doc)
    env = doc["environment"]
    for key in ("torch", "device_name", "cpu_count", "git_commit", "device"):
        assert key in env
    assert doc["config"]["repeats"] == 3
    rows = doc["rows"]
    torch_rows = [r for r in rows if r["backend"] == "torch"]
    assert {(r["model"], r["batch"]) for r in torch_rows} == {(m, b) for m in ("nested", "resnetse34l") for b in (1, 2)}
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
    for r in torch_rows:
        assert r["error"] is None, r["error"]
        assert r["repeats"] == 3
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["utt_per_s"] == pytest.approx(r["batch"] / (r["p50_ms"] / 1e3))
        assert r["rtf"] == pytest.approx(r["p50_ms"] / 1e3 / (r["batch"] * 0.5))
        assert r["params"] > 0 and r["gflops_per_utt"] > 0
        assert r["max_cos_err"] == pytest.approx(0.0, abs=1e-6)  # fp32 eager against itself
        if r["model"] == "nested":
            assert r["ratio_vs_baseline"] is not None and r["ratio_vs_baseline"] > 0
        else:
            assert r["ratio_vs_baseline"] is None
    assert (out / "r.md").read_text().startswith("# nestspk-bench results")
    if importlib.util.find_spec("matplotlib"):
        assert (out / "r.png").stat().st_size > 0


def test_onnx_rows_when_available(tiny_run: tuple[dict, Path]) -> None:
    if not importlib.util.find_spec("onnxruntime"):
        pytest.skip("onnxruntime not installed")
    onnx_rows = [r for r in tiny_run[0]["rows"] if r["backend"] == "onnx"]
    assert {r["model"] for r in onnx_rows} == {"nested", "resnetse34l"}
    for r in onnx_rows:
        assert r["error"] is None, r["error"]
        assert r["threads"] == 1
        assert r["max_cos_err"] < 1e-4  # the exported graph matches torch


def test_merge_rerenders(tiny_run: tuple[dict, Path], tmp_path: Path) -> None:
    _, out = tiny_run
    assert bench.main(["--merge", str(out / "r.json"), str(out / "r.json"),
                       "--json", str(tmp_path / "m.json"), "-q"]) == 0
    merged = json.loads((tmp_path / "m.json").read_text())
    assert len(merged["rows"]) == 2 * len(tiny_run[0]["rows"])
    assert isinstance(merged["environment"], list) and len(merged["environment"]) == 2


# ----------------------------------------------------------------------------- modes


@pytest.mark.parametrize("mode,expected", [
    ("fp32", "fp32"), ("eager", "fp32"), ("bf16+cuda_graph", "cuda_graph+bf16"),
    ("fp16+channels_last", "channels_last+fp16"), ("compile", "compile"),
])
def test_canonical_mode(mode: str, expected: str) -> None:
    assert bench.canonical_mode(mode) == expected


@pytest.mark.parametrize("mode", ["int8", "bf16+fp16", "compile+cuda_graph"])
def test_bad_modes_rejected(mode: str) -> None:
    with pytest.raises(ValueError):
        bench.parse_mode(mode)


def test_cuda_only_mode_on_cpu_becomes_error_row() -> None:
    cfg = bench.BenchConfig(device="cpu", models=("resnetse34l",), durations=(0.25,), batches=(1,),
                            modes=("cuda_graph",), repeats=2, warmup=1, weights="random")
    rows = bench.run_benchmark(cfg)
    assert len(rows) == 1 and "CUDA" in rows[0]["error"]


# ----------------------------------------------------------------------------- ratios and targets


def test_ratios_pair_matching_rows_only() -> None:
    rows = [
        _row("nested", 2.0), _row("resnetse34l", 4.0),
        _row("nested", 3.0, mode="cuda_graph"),  # no baseline partner
        _row("nested", 5.0, batch=16), _row("resnetse34l", 4.0, batch=16),
        _row("nested", 1.0, duration=4.0), _row("resnetse34l", 0.0, duration=4.0, error="boom"),
    ]
    bench.add_ratios(rows)
    assert rows[0]["ratio_vs_baseline"] == pytest.approx(0.5)
    assert rows[1]["ratio_vs_baseline"] is None
    assert rows[2]["ratio_vs_baseline"] is None
    assert rows[3]["ratio_vs_baseline"] == pytest.approx(1.25)
    assert rows[5]["ratio_vs_baseline"] is None


def test_cuda_targets() -> None:
    rows = [
        _row("nested", 8.0), _row("resnetse34l", 5.0),
        _row("nested", 0.9, mode="cuda_graph", cos_err=1e-7), _row("resnetse34l", 1.0, mode="cuda_graph"),
        _row("nested", 0.5, mode="cuda_graph+bf16", cos_err=3e-3), _row("resnetse34l", 0.6, mode="cuda_graph+bf16"),
        _row("nested", 10.0, mode="compile", error="TimeoutError: exceeded"),
        _row("nested", 12.8, duration=4.0, batch=256, mode="cuda_graph+bf16"),  # 20000 utt/s
        _row("resnetse34l", 8.0, duration=4.0, batch=256, mode="cuda_graph+bf16"),
    ]
    bench.add_ratios(rows)
    t = _lines(bench.evaluate_targets(rows))
    seed = next(v for k, v in t.items() if k.startswith("seed target"))
    assert seed.passed and "cuda_graph+bf16" in seed.detail and "cos err" in seed.detail
    b1 = next(v for k, v in t.items() if k.startswith("CUDA 8 s batch 1"))
    assert b1.passed and "0.500" in b1.detail
    exact = next(v for k, v in t.items() if "best exact mode" in k)
    assert exact.passed and "cuda_graph" in exact.detail and "bf16" not in exact.detail
    assert not t["nested <= baseline latency (cuda, torch fp32)"].passed
    assert t["nested <= baseline latency (cuda, torch cuda_graph)"].passed
    thr = next(v for k, v in t.items() if k.startswith("CUDA 4 s best-batch throughput"))
    assert thr.passed and "20000 utt/s" in thr.detail and "batch 256" in thr.detail
    assert not any("CPU ONNX" in k for k in t)
    assert bench.fastest_exact_mode(rows) == "torch cuda_graph"
    assert bench.fastest_exact_mode(rows, tol=1e-2) == "torch cuda_graph+bf16"


def test_cpu_targets() -> None:
    rows = [
        _row("nested", 40.0, device="cpu", threads=2), _row("resnetse34l", 30.0, device="cpu", threads=2),
        _row("nested", 16.0, device="cpu", backend="onnx", threads=2),
        _row("resnetse34l", 20.0, device="cpu", backend="onnx", threads=2),
        _row("nested", 25.0, device="cpu", backend="onnx", threads=1),
        _row("resnetse34l", 24.0, device="cpu", backend="onnx", threads=1),
    ]
    bench.add_ratios(rows)
    t = _lines(bench.evaluate_targets(rows))
    seed = next(v for k, v in t.items() if k.startswith("seed target"))
    assert seed.passed and "onnx fp32 2t" in seed.detail
    ort = next(v for k, v in t.items() if k.startswith("CPU ONNX 2 threads"))
    assert not ort.passed and "16.00" in ort.detail
    assert t["nested <= baseline latency (cpu, onnx fp32, 2 threads)"].passed
    assert not t["nested <= baseline latency (cpu, onnx fp32, 1 threads)"].passed
    assert not any(k.startswith("CUDA") for k in t)


def test_no_applicable_targets_for_other_workloads() -> None:
    rows = [_row("nested", 3.0, duration=2.0), _row("resnetse34l", 3.0, duration=2.0)]
    bench.add_ratios(rows)
    names = [t.name for t in bench.evaluate_targets(rows)]
    assert names == ["nested <= baseline latency (cuda, torch fp32)"]  # ratio 1.0 counts as <=


def test_table_and_markdown_render_errors_and_ratios() -> None:
    rows = [_row("nested", 2.0), _row("resnetse34l", 4.0), _row("nested", 0.0, mode="compile", error="TimeoutError: x")]
    doc = bench.build_document(rows, {"device": "cuda", "device_name": "test"}, {})
    table = bench.format_table(doc["rows"])
    assert "ERROR TimeoutError" in table and "0.500" in table
    md = bench.format_markdown(doc)
    assert "| nested |" in md and "## Targets" in md and "PASS" in md


def test_cpu_target_lines_per_precision() -> None:
    rows = [
        _row("nested", 16.0, device="cpu", backend="onnx", threads=2),
        _row("resnetse34l", 20.0, device="cpu", backend="onnx", threads=2),
        _row("nested", 11.0, device="cpu", backend="onnx", mode="int8", threads=2, cos_err=2e-3),
        _row("resnetse34l", 12.0, device="cpu", backend="onnx", mode="int8", threads=2, cos_err=1e-3),
    ]
    bench.add_ratios(rows)
    t = _lines(bench.evaluate_targets(rows))
    fp32 = t["CPU ONNX 2 threads 8 s nested p50 <= 15 ms (fp32)"]
    int8 = t["CPU ONNX 2 threads 8 s nested p50 <= 15 ms (int8)"]
    assert not fp32.passed and "exact" in fp32.detail
    assert int8.passed and "cos err 2.0e-03" in int8.detail
    assert t["nested <= baseline latency (cpu, onnx int8, 2 threads)"].passed
    assert bench.format_table(rows)  # int8 sorts after the torch modes without error


def test_paired_run_interleaves_models(tmp_path: Path) -> None:
    args = ["--device", "cpu", "--backend", "torch", "--durations", "0.5", "--batch", "1", "--repeats", "4",
            "--warmup", "1", "--weights", "random", "--paired", "2", "--json", str(tmp_path / "p.json"), "-q"]
    assert bench.main(args) == 0
    doc = json.loads((tmp_path / "p.json").read_text())
    rows = doc["rows"]
    assert {r["model"] for r in rows} == {"nested", "resnetse34l"} and doc["config"]["rounds"] == 2
    for r in rows:
        assert not r["error"], r["error"]
        assert len(r["round_p50_ms"]) == 2 and r["repeats"] == 4 and r["p50_ms"] > 0
    nested = next(r for r in rows if r["model"] == "nested")
    assert nested["ratio_vs_baseline"] is not None


def test_int8_rows_need_trained_weights() -> None:
    path, err = bench._shipped_int8("random")
    assert path is None and "trained" in err
    path, err = bench._shipped_int8("nested_4level")
    assert err is None and path.name == "nested_4level.int8.onnx"


def test_paired_ratio_is_the_median_of_round_ratios() -> None:
    n = _row("nested", 6.0)
    b = _row("resnetse34l", 5.0)
    # the host was slow for the baseline's blocks in one round and for nested's in two others
    n["round_p50_ms"] = [4.0, 7.0, 7.0, 4.0, 4.0]
    b["round_p50_ms"] = [4.4, 7.6, 4.5, 8.0, 4.5]
    bench.add_ratios([n, b])
    assert n["ratio_vs_baseline"] == pytest.approx(sorted([4 / 4.4, 7 / 7.6, 7 / 4.5, 4 / 8.0, 4 / 4.5])[2])
    assert n["ratio_pooled_p50"] == pytest.approx(6.0 / 5.0)
    plain_n, plain_b = _row("nested", 6.0), _row("resnetse34l", 5.0)
    bench.add_ratios([plain_n, plain_b])
    assert plain_n["ratio_vs_baseline"] == pytest.approx(1.2) and "ratio_pooled_p50" not in plain_n
