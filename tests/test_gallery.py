"""nestspk.gallery: VectorIndex, identify with a threshold, remove, atomic saves, bounded and validated loading
(issue 17 items 2, 9, 11, 15; issue 16.7). Synthetic unit embeddings: no model needed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from nestspk.errors import GalleryError
from nestspk.gallery import UNKNOWN, Gallery, NumpyIndex, VectorIndex

from conftest import reliability_bench

DIM = 16
REPO = Path(__file__).resolve().parent.parent


def _unit(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    e = np.random.default_rng(seed).standard_normal((n, dim))
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def gallery() -> Gallery:
    g = Gallery(DIM, model="m")
    for i, name in enumerate(["alice", "bob", "carol"]):
        g.enroll(name, _unit(2, seed=i))
    return g


def test_numpy_index_is_a_vector_index_and_exact() -> None:
    idx = NumpyIndex(DIM)
    assert isinstance(idx, VectorIndex)
    v = _unit(5)
    idx.add(list("abcde"), v)
    scores, names = idx.search(v[[3]], 2)
    assert names[0][0] == "d" and scores.shape == (1, 2) and scores[0, 0] == pytest.approx(1.0, abs=1e-6)
    idx.remove(["d"])
    assert idx.names() == list("abce") and len(idx) == 4 and idx.vectors().shape == (4, DIM)
    with pytest.raises(GalleryError):
        idx.remove(["zzz"])
    with pytest.raises(GalleryError):
        idx.add(["a"], v[:1])


def test_identify_threshold_unknown_and_remove(gallery: Gallery) -> None:
    q = gallery.centroid("bob") / np.linalg.norm(gallery.centroid("bob"))
    top = gallery.identify(q, top_k=3)
    assert top[0][0] == "bob" and len(top) == 3
    assert gallery.identify(q, top_k=3, threshold=0.999) == [("bob", pytest.approx(top[0][1]))]
    far = -q
    best = gallery.identify(far, top_k=1)[0][1]
    assert gallery.identify(far, threshold=0.99) == [(UNKNOWN, pytest.approx(best))]
    gallery.remove("bob")
    assert gallery.speakers == ["alice", "carol"] and "bob" not in [n for n, _ in gallery.identify(q)]
    with pytest.raises(GalleryError, match="unknown speaker"):
        gallery.remove("bob")
    with pytest.raises(GalleryError, match="reserved"):
        gallery.enroll(UNKNOWN, _unit(1))


@pytest.mark.parametrize("name", ["", "   ", "a\x00b", 5, None, "x" * 1001])
def test_bad_names_rejected_at_enroll(name) -> None:
    with pytest.raises(GalleryError):
        Gallery(DIM).enroll(name, _unit(1))


def test_what_saves_loads(tmp_path: Path) -> None:
    g = Gallery(DIM, model="m")
    names = ["trailing  ", " lead", "ünï", "\udcff raw-byte name", "tab\tname", "1"]
    for i, n in enumerate(names):
        g.enroll(n, _unit(1 + i, seed=i))
    p = tmp_path / "g.npz"
    g.save(p)
    h = Gallery.load(p, model="m", dim=DIM)
    assert h.speakers == names
    for n in names:
        assert np.array_equal(h.centroid(n), g.centroid(n)) and h.count(n) == g.count(n)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~_umask())  # a normal file, not mkstemp's 0600


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


# --------------------------------------------------------------------------- malformed files


def _write_npz(path: Path, arrays: dict, compress: bool = False) -> Path:
    with open(path, "wb") as f:
        (np.savez_compressed if compress else np.savez)(f, **arrays)
    return path


def _arrays(n: int = 2, emb: np.ndarray | None = None, names: list | None = None, model: str = "m") -> dict:
    return {"names": np.array(names if names is not None else [f"s{i}" for i in range(n)]),
            "embeddings": _unit(n) if emb is None else emb, "counts": np.ones(n, np.int64),
            "meta": np.array(json.dumps({"format": "nestspk-gallery/1", "model": model, "embed_dim": DIM}))}


def _bomb(path: Path, inflated: int) -> Path:
    """A gallery zip whose embeddings member is ``inflated`` bytes of zeros, deflated to ~1/1000."""
    good = _arrays()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for k in ("names", "counts", "meta"):
            with z.open(f"{k}.npy", "w") as f:
                np.lib.format.write_array(f, good[k])
        with z.open("embeddings.npy", "w", force_zip64=True) as f:
            rows = (inflated - 128) // (4 * DIM)
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (rows, DIM)})
            block = bytes(1 << 20)
            left = rows * 4 * DIM
            while left > 0:
                f.write(block[:min(left, len(block))])
                left -= len(block)
    return path


def _lying_header(path: Path) -> Path:
    """embeddings.npy whose header claims (1e9, 512) float32 over a few bytes of data."""
    good = _arrays()
    with zipfile.ZipFile(path, "w") as z:
        for k in ("names", "counts", "meta"):
            with z.open(f"{k}.npy", "w") as f:
                np.lib.format.write_array(f, good[k])
        with z.open("embeddings.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                     "shape": (10**9, 512)})
            f.write(bytes(64))
    return path


MALFORMED = {
    "missing": lambda p: p,
    "empty": lambda p: (p.write_bytes(b""), p)[1],
    "junk": lambda p: p.write_bytes(os.urandom(3000)) and p,
    "truncated": lambda p: p.write_bytes(_write_npz(p, _arrays()).read_bytes()[:300]) and p,
    "bomb": lambda p: _bomb(p, 64 << 20),
    "lying_header": _lying_header,
    "zero_embedding": lambda p: _write_npz(p, _arrays(emb=np.zeros((2, DIM), np.float32))),
    "huge_embedding": lambda p: _write_npz(p, _arrays(emb=_unit(2) * 1e6)),
    "empty_name": lambda p: _write_npz(p, _arrays(names=["", "b"])),
    "nul_name": lambda p: _write_npz(p, _arrays(names=["a\x00b", "b"])),
    "reserved_name": lambda p: _write_npz(p, _arrays(names=[UNKNOWN, "b"])),
    "other_model": lambda p: _write_npz(p, _arrays(model="other")),
    "extra_member": lambda p: _write_npz(p, {**_arrays(), "evil": np.zeros(3)}),
    "object_names": lambda p: _write_npz(p, {**_arrays(), "names": np.array(["a", {"x": 1}], dtype=object)}),
    "meta_deep_json": lambda p: _write_npz(p, {**_arrays(), "meta": np.array("[" * 100000 + "]" * 100000)}),
    "directory": lambda p: p.mkdir() or p,
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_gallery_files_raise_gallery_error(tmp_path: Path, kind: str) -> None:
    p = MALFORMED[kind](tmp_path / "g.npz")
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(GalleryError) as ei:
        Gallery.load(p, model="m", dim=DIM)
    assert str(p) in str(ei.value)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50, f"{kind}: peak RSS grew {grown_mb:.0f} MiB"  # nothing inflated


def test_compressed_gallery_within_limits_loads(tmp_path: Path) -> None:
    p = _write_npz(tmp_path / "c.npz", _arrays(3), compress=True)
    assert Gallery.load(p, model="m", dim=DIM).speakers == ["s0", "s1", "s2"]


# --------------------------------------------------------------------------- atomic saves


def test_kill_9_during_save_keeps_a_valid_gallery(tmp_path: Path) -> None:
    path = tmp_path / "g.npz"
    g = Gallery(512, model="m")
    g.enroll("previous", _unit(1, dim=512))
    g.save(path)
    rng = np.random.default_rng(0)
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-c", reliability_bench()._KILL_SAVER.format(repo=str(REPO), path=str(path))],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.0, 0.3)))  # somewhere inside a save (each takes ~10-50 ms)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        h = Gallery.load(path, model="m", dim=512)
        assert h.speakers in (["previous"], [f"spk{i}" for i in range(3000)])


def test_loads_overlapping_saves_never_fail(tmp_path: Path) -> None:
    path = tmp_path / "g.npz"
    big = Gallery(64, model="m")
    for i in range(300):
        big.enroll(f"s{i}", _unit(1, seed=i, dim=64))
    big.save(path)
    stop = threading.Event()
    errors: list[BaseException] = []

    def saver() -> None:
        while not stop.is_set():
            big.save(path)

    t = threading.Thread(target=saver)
    t.start()
    try:
        for _ in range(60):
            try:
                assert len(Gallery.load(path, model="m", dim=64)) == 300
            except BaseException as e:  # noqa: BLE001 - collected and reported below
                errors.append(e)
    finally:
        stop.set()
        t.join()
    assert not errors, errors[:3]
    leftovers = [f for f in os.listdir(tmp_path) if f != "g.npz"]
    assert not leftovers, leftovers
