"""Gallery index benchmark: enroll and identify on synthetic galleries of 10k-1M speakers.

Enrolled speakers are random unit vectors (``dim`` 512 and 256; seeded). Two query sets of
``--queries`` each: *genuine* (an enrolled vector mixed with a fresh random direction to cosine
``--genuine-cos`` 0.7, a new recording of an enrolled speaker) and *impostor* (fresh random unit
vectors: the top-1 is a near tie, the worst case for an approximate index). Ground truth is exact
top-1 by float32 BLAS (``x @ q``, chunked).

Each (gallery size, dim, backend) runs in a fresh child process, so memory figures are not
blurred by another backend's freed allocations:

- ``numpy``: :class:`nestspk.gallery.NumpyIndex` (the default gallery index), when importable;
- ``faiss_flat``: :class:`nestspk.faiss_index.FaissIndex` ``kind="flat"`` (exact);
- ``faiss_ivf``: ``kind="ivf"`` with the default ``nlist`` (sqrt N), at each ``--nprobe``;
- ``faiss_hnsw``: ``kind="hnsw"`` (M 32, efConstruction 80) at each ``--ef-search``, up to ``--hnsw-max``.

Figures per row: ``enroll_s`` (one bulk ``add`` of all N, plus the ANN build at the first search),
``add1_ms`` (median of 20 single-speaker adds to the full index), ``remove1_ms`` (median of 5
single removals), ``p50_ms``/``p90_ms`` (batch-1 ``search(q, 5)`` latency over up to
``--latency-queries`` genuine queries), ``qps_batch`` (queries/s searching the whole query set in
one call), ``top1_genuine``/``top1_impostor`` (agreement with exact top-1), ``index_mb`` (resident
memory added by building the index: VmRSS after - before) and ``search_peak_mb`` (peak RSS above
the resident set during the batch search; VmHWM reset through /proc/self/clear_refs).

    python benchmarks/gallery_bench.py --out benchmarks/results/DATE_gallery
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from provenance import git_commit  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _unit_rows(rng: np.random.Generator, n: int, dim: int, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - s), dim), dtype=np.float32)
        out[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _exact_top1(x: np.ndarray, q: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    best = np.full(len(q), -np.inf, np.float32)
    arg = np.zeros(len(q), np.int64)
    for s in range(0, len(x), chunk):
        sc = q @ x[s:s + chunk].T
        i = sc.argmax(axis=1)
        v = sc[np.arange(len(q)), i]
        better = v > best
        best[better], arg[better] = v[better], i[better] + s
    return arg


def _child(n: int, dim: int, backend: str, a: argparse.Namespace) -> list[dict]:
    """One backend on one (n, dim) gallery, in a fresh process; returns result rows."""
    rng = np.random.default_rng([a.seed, n, dim])
    x = _unit_rows(rng, n, dim)
    names = [f"s{i}" for i in range(n)]
    who = rng.choice(n, a.queries, replace=False)
    noise = _unit_rows(rng, a.queries, dim)
    noise -= np.sum(noise * x[who], axis=1, keepdims=True) * x[who]  # orthogonal to the target
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    c = a.genuine_cos
    genuine = (c * x[who] + np.sqrt(1 - c * c) * noise).astype(np.float32)
    impostor = _unit_rows(rng, a.queries, dim)
    truth = {"genuine": _exact_top1(x, genuine), "impostor": _exact_top1(x, impostor)}
    extra_names = [f"new{i}" for i in range(20)]
    extra = _unit_rows(rng, 20, dim)

    if backend == "numpy":
        from nestspk.gallery import NumpyIndex

        configs: list[tuple[str, dict, object]] = [("numpy", {}, lambda: NumpyIndex(dim))]
    else:
        from nestspk.faiss_index import FaissIndex

        kind = backend.split("_", 1)[1]
        sweep = {"ivf": {"nprobe": a.nprobe}, "hnsw": {"ef_search": a.ef_search}}.get(kind, {})
        configs = [(backend, sweep, lambda: FaissIndex(dim, kind))]
    rows = []
    for backend, sweep, make in configs:
        rss0 = _status("VmRSS")
        t = time.perf_counter()
        ix = make()
        ix.add(names, x)
        ix.search(genuine[:1], 1)  # ANN kinds build/train here
        enroll_s = time.perf_counter() - t
        index_mb = _status("VmRSS") - rss0
        settings = [(k, v) for k, vs in sweep.items() for v in vs] or [(None, None)]
        for key, val in settings:
            if key == "nprobe":
                ix._built().nprobe = val
            elif key == "ef_search":
                ix._faiss.downcast_index(ix._built().index).hnsw.efSearch = val
            lat = []
            nlat = min(a.latency_queries if backend != "numpy" or n < 1_000_000 else 5, a.queries)
            for i in range(nlat):
                t = time.perf_counter()
                ix.search(genuine[i:i + 1], 5)
                lat.append(time.perf_counter() - t)
            agree = {}
            qps = None
            if backend == "numpy" and n >= 1_000_000:  # float64 copy of the matrix per query: a few queries only
                got = [ix.search(genuine[i:i + 1], 1)[1][0][0] for i in range(nlat)]
                agree["genuine"] = float(np.mean([g == names[j] for g, j in zip(got, truth["genuine"][:nlat])]))
                search_peak = None
            else:
                _reset_peak()
                base = _status("VmRSS")
                t = time.perf_counter()
                for kind, q in (("genuine", genuine), ("impostor", impostor)):
                    _, got = ix.search(q, 1)
                    agree[kind] = float(np.mean([g[0] == names[j] for g, j in zip(got, truth[kind])]))
                qps = 2 * a.queries / (time.perf_counter() - t)
                search_peak = _status("VmHWM") - base
            row = {"n": n, "dim": dim, "backend": backend, "setting": f"{key}={val}" if key else "",
                   "enroll_s": round(enroll_s, 3), "index_mb": round(index_mb, 1),
                   "vectors_mb": round(x.nbytes / 2**20, 1), "p50_ms": round(1e3 * float(np.median(lat)), 3),
                   "p90_ms": round(1e3 * float(np.percentile(lat, 90)), 3), "latency_queries": nlat,
                   "qps_batch": round(qps, 1) if qps else None,
                   "search_peak_mb": round(search_peak, 1) if search_peak is not None else None,
                   "top1_genuine": agree.get("genuine"), "top1_impostor": agree.get("impostor")}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        add_ms = []
        for nm, v in zip(extra_names, extra):
            t = time.perf_counter()
            ix.add([nm], v[None])
            add_ms.append(time.perf_counter() - t)
        rem_ms = []
        for nm in extra_names[:5]:
            t = time.perf_counter()
            ix.remove([nm])
            rem_ms.append(time.perf_counter() - t)
        for r in rows:
            if r["backend"] == backend:
                r["add1_ms"] = round(1e3 * float(np.median(add_ms)), 3)
                r["remove1_ms"] = round(1e3 * float(np.median(rem_ms)), 3)
        del ix
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--dims", default="512,256")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--latency-queries", type=int, default=50)
    p.add_argument("--genuine-cos", type=float, default=0.7)
    p.add_argument("--nprobe", default="8,32")
    p.add_argument("--ef-search", default="64,128")
    p.add_argument("--hnsw-max", type=int, default=100_000, help="largest gallery to build HNSW on")
    p.add_argument("--numpy-max", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backends", default="numpy,faiss_flat,faiss_ivf,faiss_hnsw")
    p.add_argument("--tag", default="gallery_bench", help="output file stem")
    p.add_argument("--blas-threads", type=int, default=1,
                   help="OPENBLAS_NUM_THREADS of the children (spinning OpenBLAS threads slow FAISS's OpenMP ones)")
    p.add_argument("--out", default=None, help="result folder (created); omit in child mode")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.nprobe = [int(v) for v in a.nprobe.split(",")]
    a.ef_search = [int(v) for v in a.ef_search.split(",")]
    if a.child:
        n, dim, backend = a.child.split(",")
        print(json.dumps(_child(int(n), int(dim), backend, a)))
        return 0
    if not a.out:
        p.error("--out is required")
    import faiss

    t0 = time.time()
    load0 = os.getloadavg()
    commit = git_commit()
    rows = []
    forwarded = [x for x in (argv if argv is not None else sys.argv[1:])]
    strip = {"--out"}
    child_args = []
    it = iter(forwarded)
    for tok in it:
        if tok in strip:
            next(it, None)
        elif not tok.startswith("--out="):
            child_args.append(tok)
    backends = [b for b in a.backends.split(",") if b]
    if "numpy" in backends:
        try:
            import nestspk.gallery  # noqa: F401
        except ImportError:
            p.error("backend numpy needs nestspk.gallery (NumpyIndex)")
    for dim in (int(d) for d in a.dims.split(",")):
        for n in (int(s) for s in a.sizes.split(",")):
            for backend in backends:
                if backend == "numpy" and n > a.numpy_max or backend == "faiss_hnsw" and n > a.hnsw_max:
                    continue
                cmd = [sys.executable, __file__, "--child", f"{n},{dim},{backend}"] + child_args
                env = dict(os.environ, OPENBLAS_NUM_THREADS=str(a.blas_threads), OMP_WAIT_POLICY="PASSIVE")
                res = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if res.returncode != 0:
                    raise SystemExit(f"child {n},{dim},{backend} failed:\n{res.stderr[-3000:]}")
                rows += json.loads(res.stdout.strip().splitlines()[-1])
                print(f"{n} x {dim} {backend}: done", file=sys.stderr, flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    argv0 = Path(sys.argv[0]).resolve()
    cmd = " ".join(["python", shlex.quote(str(argv0.relative_to(REPO)) if REPO in argv0.parents else sys.argv[0])]
                   + [shlex.quote(x) for x in forwarded])
    result = {"command": cmd, "git_commit": commit, "faiss": faiss.__version__, "numpy": np.__version__,
              "python": platform.python_version(), "cpus": os.cpu_count(), "faiss_threads": faiss.omp_get_max_threads(),
              "loadavg_start": load0, "loadavg_end": os.getloadavg(), "wall_s": round(time.time() - t0, 1),
              "queries": a.queries, "genuine_cos": a.genuine_cos,
              "child_env": {"OPENBLAS_NUM_THREADS": a.blas_threads, "OMP_WAIT_POLICY": "PASSIVE"}, "rows": rows}
    (out / f"{a.tag}.json").write_text(json.dumps(result, indent=1))
    cols = ["n", "dim", "backend", "setting", "enroll_s", "add1_ms", "remove1_ms", "p50_ms", "p90_ms", "qps_batch",
            "top1_genuine", "top1_impostor", "index_mb", "search_peak_mb"]
    lines = ["# Gallery index benchmark", "", f"`{cmd}` at {commit[:10]}; faiss {faiss.__version__}, "
             f"{result['faiss_threads']} threads on {result['cpus']} shared CPUs (load {load0[0]:.1f} at start, "
             f"{result['loadavg_end'][0]:.1f} at end); {a.queries} genuine (cosine {a.genuine_cos} to the target) "
             f"+ {a.queries} impostor queries; {result['wall_s']} s.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join("-" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    (out / f"{a.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
