"""onnxruntime CPU probes behind the figures in benchmarks/README.md (8 s of audio, batch 1).

    python benchmarks/ort_cpu_probe.py profile weights/nested_4level.onnx        # kernel time per op type / node
    python benchmarks/ort_cpu_probe.py variants weights/nested_4level.onnx       # session/graph variants, interleaved
    python benchmarks/ort_cpu_probe.py stft                                      # onnxruntime's STFT op as front end
    python benchmarks/ort_cpu_probe.py compare A.onnx B.onnx [...]               # whole files, interleaved

``--threads`` (default 2) sets intra-op threads. ``variants`` times, in 7 interleaved rounds
of 30 calls: the file as is, with denormals-as-zero, without the NCHWc layout transformer,
and with the squeeze-excitation ReduceMean rewritten as GlobalAveragePool
(:func:`nestspk.quantize.rewrite_se_means`); it prints min and median of the round medians.
``compare`` times whole ONNX files the same way (7 interleaved rounds of 20 calls) and prints each
file's median and the median over rounds of each file's p50 divided by the first file's.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

SAMPLES = 128000  # 8 s at 16 kHz


def _session(model: str | bytes, threads: int, profile: bool = False, config: dict | None = None,
             disabled: list[str] | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.enable_profiling = profile
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def _audio() -> np.ndarray:
    return (np.random.default_rng(0).standard_normal((1, SAMPLES)) * 0.1).astype(np.float32)


def _interleaved_p50(sessions: dict[str, ort.InferenceSession], x: np.ndarray, warmup: int, calls: int,
                     rounds: int = 7) -> dict[str, list[float]]:
    """Per session, the p50 (ms) of ``calls`` timed runs in each of ``rounds`` rounds, sessions interleaved."""
    medians: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for name, sess in sessions.items():
            feed = {sess.get_inputs()[0].name: x}
            for _ in range(warmup):
                sess.run(None, feed)
            t = []
            for _ in range(calls):
                t0 = time.perf_counter()
                sess.run(None, feed)
                t.append((time.perf_counter() - t0) * 1e3)
            medians[name].append(float(np.median(t)))
    return medians


def profile(path: str, threads: int, top: int) -> None:
    sess = _session(path, threads, profile=True)
    x = {sess.get_inputs()[0].name: _audio()}
    for _ in range(10):
        sess.run(None, x)
    for _ in range(30):
        sess.run(None, x)
    trace = sess.end_profiling()
    events = json.load(open(trace))
    os.remove(trace)
    by_op, by_node, shapes = collections.Counter(), collections.Counter(), {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
            by_node[e["name"]] += e["dur"]
            shapes[e["name"]] = (e["args"]["op_name"], str(e["args"].get("input_type_shape"))[:110])
    total = sum(by_op.values())
    print(f"{path}, {threads} threads: summed kernel time {total / 40 / 1e3:.2f} ms per call (40 calls)")
    for op, d in by_op.most_common(top):
        print(f"  {op:28s} {100 * d / total:5.1f}%")
    print("top nodes:")
    for n, d in by_node.most_common(top):
        print(f"  {100 * d / total:5.1f}%  {shapes[n][0]:12s} {shapes[n][1]}")


def variants(path: str, threads: int) -> None:
    from nestspk.quantize import rewrite_se_means

    model = onnx.load(path)
    rewrite_se_means(model)
    with tempfile.NamedTemporaryFile(suffix=".onnx", delete=False) as f:
        gap_path = f.name
    onnx.save_model(model, gap_path)
    sessions = {
        "as is": _session(path, threads),
        "denormals as zero": _session(path, threads, config={"session.set_denormal_as_zero": "1"}),
        "no NCHWc transformer": _session(path, threads, disabled=["NchwcTransformer"]),
        "SE mean -> GlobalAveragePool": _session(gap_path, threads),
    }
    os.remove(gap_path)
    x = _audio()
    outs = {name: sess.run(None, {sess.get_inputs()[0].name: x})[0] for name, sess in sessions.items()}
    ref = outs["as is"]
    for name, out in outs.items():
        assert np.abs(out - ref).max() < 1e-4, name
    medians = _interleaved_p50(sessions, x, warmup=5, calls=30)
    for name, m in medians.items():
        print(f"{name:30s} p50 min {min(m):6.2f} ms  median {np.median(m):6.2f} ms")


def stft(threads: int) -> None:
    """onnxruntime's STFT op (512-point, hop 160, 400-sample window zero-padded) vs the cropped conv1d."""
    from onnx import TensorProto, helper, numpy_helper

    import torch

    from nestspk.features import FrontendConfig, cropped_dft_basis

    n = SAMPLES + 512
    win = np.zeros(512, np.float32)
    win[56:456] = np.hamming(401)[:400]
    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["x", "ax"], ["x3"]),
         helper.make_node("STFT", ["x3", "step", "win", "flen"], ["y"], onesided=1)],
        "stft", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None, 257, 2])],
        initializer=[numpy_helper.from_array(np.array([2], np.int64), "ax"),
                     numpy_helper.from_array(np.array(160, np.int64), "step"),
                     numpy_helper.from_array(win, "win"),
                     numpy_helper.from_array(np.array(512, np.int64), "flen")])
    stft_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)

    basis, _ = cropped_dft_basis(FrontendConfig())  # (486, 1, 400)

    class Conv(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.conv1d(x.unsqueeze(1), basis, stride=160)

    with tempfile.TemporaryDirectory() as d:
        conv_path = os.path.join(d, "conv.onnx")
        torch.onnx.export(Conv(), (torch.randn(1, n - 112),), conv_path, dynamo=True, opset_version=18)
        sessions = {"STFT op, 257 bins": (_session(stft_model.SerializeToString(), threads), n),
                    "cropped conv1d, 243 bins": (_session(conv_path, threads), n - 112)}
        for name, (sess, length) in sessions.items():
            feed = {sess.get_inputs()[0].name: np.random.default_rng(0).standard_normal((1, length)).astype(np.float32)}
            for _ in range(5):
                sess.run(None, feed)
            t = []
            for _ in range(50):
                t0 = time.perf_counter()
                sess.run(None, feed)
                t.append((time.perf_counter() - t0) * 1e3)
            print(f"{name:26s} p50 {np.median(t):6.2f} ms")


def compare(paths: list[str], threads: int) -> None:
    sessions = {p: _session(p, threads) for p in paths}
    x = _audio()
    outs = [s.run(None, {s.get_inputs()[0].name: x})[0] for s in sessions.values()]
    medians = list(_interleaved_p50(sessions, x, warmup=3, calls=20).values())
    for path, out, m in zip(paths, outs, medians):
        ratio = np.median(np.array(m) / np.array(medians[0]))
        print(f"{path}: p50 median {np.median(m):6.2f} ms (rounds {min(m):.2f}-{max(m):.2f}); "
              f"/ first file {ratio:.3f}; max |out - first| {np.abs(out - outs[0]).max():.1e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("profile", "variants", "stft", "compare"))
    p.add_argument("onnx", nargs="*", default=["weights/nested_4level.onnx"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=12)
    a = p.parse_args()
    if a.what == "profile":
        profile(a.onnx[0], a.threads, a.top)
    elif a.what == "variants":
        variants(a.onnx[0], a.threads)
    elif a.what == "compare":
        compare(a.onnx, a.threads)
    else:
        stft(a.threads)


if __name__ == "__main__":
    main()
