"""FAISS gallery index (extra ``faiss``): exact flat search, IVF/HNSW, removal and safe persistence."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from nestspk.errors import GalleryError
from nestspk.extras import MissingExtraError

faiss = pytest.importorskip("faiss", reason="faiss-cpu (extra 'faiss') is not installed")

from nestspk.faiss_index import FaissIndex  # noqa: E402

DIM = 32


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    """3000 speakers around 30 clusters (structure an ANN index can use), and genuine queries near 200 of them."""
    rng = np.random.default_rng(0)
    centres = _unit(rng.standard_normal((30, DIM)))
    x = _unit(centres[rng.integers(30, size=3000)] + 0.5 * rng.standard_normal((3000, DIM)))
    names = [f"spk{i:04d}" for i in range(3000)]
    who = rng.choice(3000, 200, replace=False)
    q = _unit(x[who] + 0.15 * rng.standard_normal((200, DIM)))
    return names, x, q, who


def _exact(x, q, k):
    s = q.astype(np.float64) @ x.T.astype(np.float64)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def test_flat_equals_exact_numpy(data):
    names, x, q, _ = data
    ix = FaissIndex(DIM)
    ix.add(names, x)
    scores, got = ix.search(q, 5)
    ref_s, ref_i = _exact(x, q, 5)
    assert scores.shape == (200, 5) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    assert [r[0] for r in got] == [names[i] for i in ref_i[:, 0]]
    assert ix.names() == names and np.array_equal(ix.vectors(), x) and len(ix) == 3000
    s1, n1 = ix.search(q[:3], 10_000)  # k larger than the gallery: all of it
    assert s1.shape == (3, 3000) and np.all(np.diff(s1, axis=1) <= 1e-6)


@pytest.mark.parametrize("kind,opts", [("ivf", {}), ("hnsw", {})])  # the defaults
def test_approximate_kinds_agree_with_exact(data, kind, opts):
    names, x, q, who = data
    ix = FaissIndex(DIM, kind, **opts)
    ix.add(names, x)
    _, got = ix.search(q, 1)
    agree = np.mean([g[0] == names[i] for g, i in zip(got, _exact(x, q, 1)[1][:, 0])])
    assert agree >= 0.95, f"{kind}: top-1 agreement with exact search {agree:.3f}"
    # adding after the index is built keeps it searchable
    ix.add(["late"], q[:1])
    assert ix.search(q[:1], 1)[1][0] == ["late"]


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_remove(data, kind):
    names, x, q, who = data
    ix = FaissIndex(DIM, kind, nprobe=30)
    ix.add(names, x)
    ix.search(q[:1], 1)  # build the ANN structure first, so removal must update it
    target = names[who[0]]
    assert ix.search(q[:1], 1)[1][0] == [target]
    with pytest.raises(GalleryError, match="unknown"):
        ix.remove([target, "nobody"])
    assert len(ix) == 3000  # nothing removed
    ix.remove([target, names[1]])
    assert len(ix) == 2998 and target not in ix.names() and names[1] not in ix.names()
    assert ix.names() == [n for n in names if n not in (target, names[1])]
    s, got = ix.search(q, 3)
    assert all(target not in g and names[1] not in g for g in got)
    keep = np.array([n not in (target, names[1]) for n in names])
    np.testing.assert_array_equal(ix.vectors(), x[keep])
    ix.add([target], x[who[:1]])  # a removed name can come back
    assert ix.search(q[:1], 1)[1][0] == [target]


def test_bad_inputs(data):
    names, x, q, _ = data
    ix = FaissIndex(DIM)
    with pytest.raises(GalleryError, match="empty"):
        ix.search(q, 1)
    with pytest.raises(GalleryError, match="shape"):
        ix.add(names[:2], x[:3])
    with pytest.raises(GalleryError, match="L2-normalised"):
        ix.add(names[:2], 2 * x[:2])
    with pytest.raises(GalleryError, match="NaN"):
        ix.add(["a"], np.full((1, DIM), np.nan, np.float32))
    with pytest.raises(GalleryError, match="repeated"):
        ix.add(["a", "a"], x[:2])
    ix.add(["a"], x[:1])
    with pytest.raises(GalleryError, match="already present"):
        ix.add(["a"], x[1:2])
    with pytest.raises(GalleryError, match="shape"):
        ix.search(q[:, :4], 1)
    with pytest.raises(ValueError, match="k must be"):
        ix.search(q, 0)
    with pytest.raises(ValueError, match="kind"):
        FaissIndex(DIM, "lsh")


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_round_trip(data, kind, tmp_path):
    names, x, q, _ = data
    ix = FaissIndex(DIM, kind, nprobe=4)
    ix.add(names, x)
    ix.remove(names[:10])  # non-contiguous faiss ids must survive the round trip
    path = tmp_path / "g.npz"
    ix.save(path, model="nested_4level")
    back = FaissIndex.load(path, model="nested_4level", dim=DIM)
    assert back.kind == kind and back.params == ix.params and back.names() == ix.names()
    np.testing.assert_array_equal(back.vectors(), ix.vectors())
    s0, n0 = ix.search(q, 5)
    s1, n1 = back.search(q, 5)
    assert n0 == n1
    np.testing.assert_array_equal(s0, s1)
    rebuilt = FaissIndex.load(path, rebuild=True)  # the ANN structure built anew from the stored vectors
    assert rebuilt.names() == ix.names() and rebuilt.search(q[:20], 1)[1] == [n[:1] for n in n0[:20]]
    with pytest.raises(GalleryError, match="model"):
        FaissIndex.load(path, model="resnetse34l_asp")
    with pytest.raises(GalleryError, match="dimension"):
        FaissIndex.load(path, dim=DIM + 1)


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_load_rejects_tampered_files(data, tmp_path):
    names, x, _, _ = data
    ix = FaissIndex(DIM, "ivf")
    ix.add(names, x)
    good = tmp_path / "good.npz"
    ix.save(good, model="m")
    cases = {
        "sha256": {"faiss_index": np.concatenate([np.load(good)["faiss_index"][:-1], np.array([7], np.uint8)])},
        "inconsistent": {"vectors": x[:5]},
        "format": {"meta": np.array(json.dumps({"format": "other"}))},
        "L2-normalised": {"vectors": 2 * x},
    }
    for msg, change in cases.items():
        bad = tmp_path / f"bad_{msg}.npz"
        bad.write_bytes(good.read_bytes())
        _rewrite(bad, **change)
        with pytest.raises(GalleryError, match=msg):
            FaissIndex.load(bad)
    obj = tmp_path / "pickle.npz"
    np.savez(obj, meta=np.array([{"format": "x"}], dtype=object), names=np.array(["a"]), vectors=x[:1])
    with pytest.raises(GalleryError, match="not a nestspk FAISS index"):
        FaissIndex.load(obj)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(GalleryError):
        FaissIndex.load(tmp_path / "junk.npz")


def test_gallery_with_faiss_index(data):
    gallery = pytest.importorskip("nestspk.gallery")
    names, x, q, who = data
    g_np = gallery.Gallery(DIM, "m")
    g_fa = gallery.Gallery(DIM, "m", index="faiss")
    g_hn = gallery.Gallery(DIM, "m", index=FaissIndex(DIM, "hnsw"))
    for i in range(300):
        for g in (g_np, g_fa, g_hn):
            g.enroll(names[i], x[i:i + 1])
    for g in (g_np, g_fa, g_hn):
        g.enroll(names[0], x[1:2])  # extend one speaker: the index entry is replaced
        g.remove(names[2])
    for qi in q[:50]:
        ref = g_np.identify(qi, top_k=3)
        for g in (g_fa, g_hn):
            got = g.identify(qi, top_k=3)
            assert [n for n, _ in got] == [n for n, _ in ref]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in ref], atol=1e-5)
    assert g_fa.identify(q[0], threshold=1.01)[0][0] == gallery.UNKNOWN


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'nestspk\[faiss\]'"):
        FaissIndex(DIM)
