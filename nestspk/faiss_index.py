"""A FAISS-backed speaker index for :class:`~nestspk.gallery.Gallery` (extra ``faiss``).

Implements the ``VectorIndex`` protocol: names and L2-normalised float32 vectors, searched
by inner product (= cosine). The vectors are kept once, in a FAISS ``IndexFlatIP`` in
``names()`` order (row = position; :meth:`FaissIndex.vectors` copies them out); what is
searched depends on ``kind``:

- ``"flat"`` (default): that ``IndexFlatIP`` itself: exact search (BLAS inner products and a
  heap, multi-threaded), memory = the vectors once. Results equal the numpy gallery's up to
  float32 rounding.
- ``"ivf"``: ``IndexIVFFlat`` (inner product) with ``nlist`` lists, ``nprobe`` searched;
  trained on the vectors present at the first search (k-means seeded, so a rebuild from the
  same vectors gives the same index). Approximate; holds a second copy of the vectors.
- ``"hnsw"``: ``IndexHNSWFlat`` (inner product), ``M`` links, ``efSearch``; approximate,
  holds a second copy plus the graph. FAISS cannot remove from HNSW: a removal rebuilds the
  graph at the next search.

FAISS ids are stable int64 numbers (never reused), mapped back to rows by an array.
:meth:`FaissIndex.save` writes one ``.npz`` (no pickle) with the names, vectors, a JSON
``meta`` (format, model, dim, kind, parameters) and, for ``ivf``/``hnsw``, the serialised
FAISS index as bytes with its sha256; :meth:`FaissIndex.load` checks format, model, dim,
shapes, dtypes, norms, unique names and the sha256 before it deserialises anything, and
rebuilds the index from the vectors when the stored one is absent or ``rebuild=True``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import GalleryError
from .extras import require

__all__ = ["FaissIndex", "FORMAT", "KINDS"]

log = logging.getLogger(__name__)

FORMAT = "nestspk-faiss-index/1"
KINDS = ("flat", "ivf", "hnsw")
_NORM_TOL = 1e-3
_MIN_POINTS_PER_LIST = 39  # FAISS warns below this many training points per IVF list
_TRAIN_PER_LIST = 64  # k-means training points per IVF list (FAISS samples up to 256: 4x the training time)


def _faiss() -> Any:
    return require("faiss", "faiss", "Gallery(index='faiss')", package="faiss-cpu")


class FaissIndex:
    """Names + unit vectors searched with FAISS. See the module docstring for ``kind``.

    Args:
        dim: embedding dimension.
        kind: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"``.
        nlist: IVF lists; default ``clip(round(sqrt(N)), 1, N // 39)`` at training time; k-means is trained
            on at most ``64 * nlist`` of the vectors (a seeded sample).
        nprobe: IVF lists searched per query.
        hnsw_m: HNSW links per node.
        ef_search, ef_construction: HNSW search/build breadth.
        threads: FAISS OpenMP threads (``None``: FAISS's default, all cores).
    """

    def __init__(self, dim: int, kind: str = "flat", nlist: int | None = None, nprobe: int = 16,
                 hnsw_m: int = 32, ef_search: int = 128, ef_construction: int = 80, threads: int | None = None):
        self._faiss = _faiss()
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if nlist is not None and nlist < 1 or nprobe < 1 or hnsw_m < 2 or ef_search < 1 or ef_construction < 1:
            raise ValueError("nlist, nprobe, ef_search, ef_construction must be >= 1 and hnsw_m >= 2")
        if threads is not None:
            self._faiss.omp_set_num_threads(int(threads))
        self.dim = int(dim)
        self.kind = kind
        self.params = {"nlist": nlist, "nprobe": int(nprobe), "hnsw_m": int(hnsw_m), "ef_search": int(ef_search),
                       "ef_construction": int(ef_construction)}
        self._store = self._faiss.IndexFlatIP(self.dim)  # the vectors, row = position (also the exact index)
        self._n = 0
        self._names: list[str] = []
        self._row: dict[str, int] = {}
        self._ids = np.zeros(0, np.int64)  # faiss id of each row
        self._next_id = 0
        self._index: Any = None  # the ivf/hnsw structure; None = build at the next search
        self._id_table: np.ndarray | None = None  # faiss id -> row, rebuilt after add/remove
        self._lock = threading.RLock()

    # -- protocol ----------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"FaissIndex(dim={self.dim}, kind={self.kind!r}, n={self._n})"

    def names(self) -> list[str]:
        """Speaker names, in row order."""
        with self._lock:
            return list(self._names)

    def vectors(self) -> np.ndarray:
        """``(N, dim)`` float32 copy, in :meth:`names` order."""
        with self._lock:
            return self._view().copy()

    def add(self, names: Sequence[str], vectors: np.ndarray) -> None:
        """Add speakers under new names.

        Raises:
            GalleryError: bad names (empty, not str, already present, repeated), or vectors not
                ``(len(names), dim)``, not finite or not L2-normalised; nothing is added.
        """
        names = list(names)
        vecs = self._check_vectors(vectors, len(names))
        for n in names:
            if not isinstance(n, str) or not n.strip():
                raise GalleryError(f"speaker name must be a non-empty string, got {n!r}")
        if len(set(names)) != len(names):
            raise GalleryError("add: repeated names in one call")
        if not names:
            return
        with self._lock:
            clash = [n for n in names if n in self._row]
            if clash:
                raise GalleryError(f"add: names already present: {clash[:5]}")
            start = self._n
            self._store.add(vecs)
            ids = np.arange(self._next_id, self._next_id + len(names), dtype=np.int64)
            self._next_id += len(names)
            self._ids = np.concatenate([self._ids[:start], ids])
            for i, n in enumerate(names):
                self._row[n] = start + i
            self._names += names
            self._n += len(names)
            self._id_table = None
            if self._index is not None:
                if self.kind == "ivf" and self._n > self._trained_on * 4:
                    self._index = None  # grown a lot since training: retrain at the next search
                else:
                    self._index.add_with_ids(vecs, ids)

    def remove(self, names: Sequence[str]) -> None:
        """Remove speakers; an unknown name raises GalleryError and removes nothing."""
        names = list(names)
        with self._lock:
            unknown = [n for n in names if n not in self._row]
            if unknown:
                raise GalleryError(f"unknown speaker(s) {unknown[:5]!r}{' ...' if len(unknown) > 5 else ''}")
            self._remove(names)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top ``min(k, N)`` speakers per query: ``(scores (Q, k) float32 descending, names)``."""
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        q = self._check_vectors(queries, None, "queries")
        with self._lock:
            if self._n == 0:
                raise GalleryError("the gallery is empty; enroll speakers first")
            k = min(int(k), self._n)
            if self.kind == "flat":
                scores, rows = self._store.search(q, k)
            else:
                index = self._built()
                scores, ids = index.search(q, k)
                rows = np.where(ids >= 0, self._row_of_id()[np.maximum(ids, 0)], -1)
            names = [[self._names[r] for r in row if r >= 0] for row in rows]
        scores = np.asarray(scores, np.float32)
        if any(len(n) < k for n in names):  # an ANN probe can come back short: pad with -inf, no name
            scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
        return scores, names

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike, model: str) -> None:
        """Write the index to ``path`` (.npz, no pickle) atomically; ``model`` is recorded and checked on load."""
        with self._lock:
            meta: dict[str, Any] = {"format": FORMAT, "model": model, "dim": self.dim, "kind": self.kind,
                                    "params": self.params}
            arrays: dict[str, np.ndarray] = {"names": np.array(self._names, dtype=np.str_),
                                             "vectors": self._view()}
            if self.kind != "flat" and self._n:
                blob = self._faiss.serialize_index(self._built())
                arrays["faiss_index"] = blob
                meta["faiss_sha256"] = hashlib.sha256(blob.tobytes()).hexdigest()
                meta["faiss_ntotal"] = int(self._index.ntotal)
                arrays["faiss_ids"] = self._ids
            path = Path(path)
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as f:
                np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, model: str | None = None, dim: int | None = None,
             rebuild: bool = False, threads: int | None = None) -> "FaissIndex":
        """Read an index written by :meth:`save`; GalleryError for malformed files, another model or dim."""
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                names, vecs = z["names"], z["vectors"]
                blob = z["faiss_index"] if "faiss_index" in z.files else None
                ids = z["faiss_ids"] if "faiss_ids" in z.files else None
        except (OSError, ValueError, KeyError, json.JSONDecodeError, EOFError) as e:
            raise GalleryError(f"{path}: not a nestspk FAISS index file ({type(e).__name__}: {e})") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise GalleryError(f"{path}: unknown index format {meta.get('format') if isinstance(meta, dict) else meta!r}")
        if model is not None and meta.get("model") != model:
            raise GalleryError(f"{path}: index was made with model {meta.get('model')!r}, expected {model!r}")
        d = meta.get("dim")
        if not isinstance(d, int) or (dim is not None and d != dim):
            raise GalleryError(f"{path}: index dimension {d!r}, expected {dim!r}")
        if meta.get("kind") not in KINDS or not isinstance(meta.get("params"), dict):
            raise GalleryError(f"{path}: bad kind/params {meta.get('kind')!r}")
        if names.ndim != 1 or names.dtype.kind != "U" or vecs.ndim != 2 or vecs.shape != (len(names), d) \
                or vecs.dtype != np.float32:
            raise GalleryError(f"{path}: inconsistent names {names.shape} {names.dtype} / vectors {vecs.shape} "
                               f"{vecs.dtype} for dim {d}")
        p = meta["params"]
        try:
            idx = cls(d, meta["kind"], nlist=p.get("nlist"), nprobe=p["nprobe"], hnsw_m=p["hnsw_m"],
                      ef_search=p["ef_search"], ef_construction=p["ef_construction"], threads=threads)
        except (KeyError, TypeError, ValueError) as e:
            raise GalleryError(f"{path}: bad index parameters {p!r} ({e})") from e
        try:
            idx.add(names.tolist(), vecs)
        except GalleryError as e:
            raise GalleryError(f"{path}: {e}") from e
        if blob is not None and not rebuild:
            want = meta.get("faiss_sha256")
            if blob.dtype != np.uint8 or blob.ndim != 1 or hashlib.sha256(blob.tobytes()).hexdigest() != want:
                raise GalleryError(f"{path}: stored FAISS index does not match its sha256; load with rebuild=True")
            if ids is None or ids.shape != names.shape or ids.dtype != np.int64 or (len(ids) and ids.min() < 0) \
                    or len(np.unique(ids)) != len(ids):
                raise GalleryError(f"{path}: missing or invalid faiss_ids for the stored FAISS index")
            index = idx._faiss.deserialize_index(blob)
            if index.d != d or index.ntotal != len(names) or meta.get("faiss_ntotal") != len(names):
                raise GalleryError(f"{path}: stored FAISS index has d={index.d}, ntotal={index.ntotal}; "
                                   f"expected {d}, {len(names)}")
            idx._set_index(index, ids)
        return idx

    # -- internals -------------------------------------------------------------------------
    def _check_vectors(self, vectors: Any, n: int | None, what: str = "vectors") -> np.ndarray:
        v = np.asarray(vectors)
        if v.ndim != 2 or v.shape[1] != self.dim or (n is not None and v.shape[0] != n):
            want = f"({n if n is not None else 'Q'}, {self.dim})"
            raise GalleryError(f"{what} must have shape {want}, got {v.shape}")
        if v.dtype.kind not in "fiu":
            raise GalleryError(f"{what} must be real numbers, got dtype {v.dtype}")
        v = np.ascontiguousarray(v, dtype=np.float32)
        if not np.isfinite(v).all():
            raise GalleryError(f"{what} contain NaN or inf")
        if v.shape[0]:
            bad = np.abs(np.einsum("ij,ij->i", v, v) - 1.0) > 2 * _NORM_TOL
            if bad.any():
                raise GalleryError(f"{what} must be L2-normalised; {int(bad.sum())} of {v.shape[0]} rows are not")
        return v

    def _view(self) -> np.ndarray:
        """The stored vectors as a read-only ``(N, dim)`` view of the FAISS flat storage (no copy)."""
        if self._n == 0:
            return np.zeros((0, self.dim), np.float32)
        v = self._faiss.rev_swig_ptr(self._store.get_xb(), self._n * self.dim).reshape(self._n, self.dim)
        v.flags.writeable = False
        return v

    def _remove(self, names: Sequence[str]) -> None:
        rows = np.array(sorted(self._row[n] for n in names), dtype=np.int64)
        if not len(rows):
            return
        keep = np.ones(self._n, bool)
        keep[rows] = False
        gone_ids = self._ids[rows]
        removed = self._store.remove_ids(self._faiss.IDSelectorBatch(rows))  # keeps the order of the rest
        if removed != len(rows):
            raise AssertionError(f"FAISS removed {removed} of {len(rows)} rows")
        self._ids = self._ids[keep]
        self._names = [n for n, k in zip(self._names, keep) if k]
        self._row = {n: i for i, n in enumerate(self._names)}
        self._n = len(self._names)
        self._id_table = None
        if self._index is not None:
            if self.kind == "ivf":
                self._index.remove_ids(gone_ids)
            else:
                self._index = None  # HNSW cannot remove: rebuild at the next search

    def _row_of_id(self) -> np.ndarray:
        if self._id_table is None:
            table = np.full(max(self._next_id, 1), -1, np.int64)
            table[self._ids] = np.arange(self._n)
            self._id_table = table
        return self._id_table

    def _set_index(self, index: Any, ids: np.ndarray) -> None:
        if self.kind == "ivf":
            index.nprobe = self.params["nprobe"]
            self._trained_on = int(index.ntotal)
        else:
            self._faiss.downcast_index(index.index).hnsw.efSearch = self.params["ef_search"]
        self._index = index
        self._ids = ids.copy()
        self._next_id = int(ids.max()) + 1 if len(ids) else 0
        self._id_table = None

    def _built(self) -> Any:
        if self._index is not None:
            return self._index
        f = self._faiss
        x = self._view()
        # renumber ids to rows: a fresh index starts from a compact id space
        self._ids = np.arange(self._n, dtype=np.int64)
        self._next_id = self._n
        self._id_table = None
        if self.kind == "ivf":
            nlist = self.params["nlist"] or int(np.clip(round(math.sqrt(self._n)), 1,
                                                        max(1, self._n // _MIN_POINTS_PER_LIST)))
            nlist = min(nlist, self._n)
            quantizer = f.IndexFlatIP(self.dim)
            index = f.IndexIVFFlat(quantizer, self.dim, nlist, f.METRIC_INNER_PRODUCT)
            index.cp.seed = 1234
            train = x
            max_train = nlist * _TRAIN_PER_LIST
            if self._n > max_train:  # a seeded sample: the same vectors train the same lists
                train = x[np.sort(np.random.default_rng(1234).choice(self._n, max_train, replace=False))]
            index.train(train)
            index.add_with_ids(x, self._ids)
            index.quantizer_trains_alone = 0
            self._keep_quantizer = quantizer  # the IVF index does not own it
            index.nprobe = self.params["nprobe"]
            self._trained_on = self._n
            log.info("FAISS IVF: trained %d lists on %d of %d vectors", nlist, len(train), self._n)
        else:
            hnsw = f.IndexHNSWFlat(self.dim, self.params["hnsw_m"], f.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = self.params["ef_construction"]
            hnsw.hnsw.efSearch = self.params["ef_search"]
            index = f.IndexIDMap2(hnsw)
            index.add_with_ids(x, self._ids)
            self._keep_quantizer = hnsw
            log.info("FAISS HNSW: built on %d vectors (M=%d)", self._n, self.params["hnsw_m"])
        self._index = index
        return index
