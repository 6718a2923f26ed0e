"""Speaker galleries: enrolled centroids, a pluggable vector index, and safe ``.npz`` files.

:class:`Gallery` keeps, per speaker, the mean of its enrolled (L2-normalised) embeddings and
their count, and an index of the L2-normalised centroids for search. The index follows the
:class:`VectorIndex` protocol: :class:`NumpyIndex` (exact inner product, the default) or the
FAISS one of ``nestspk.faiss_index`` (``index="faiss"``).

Files (:meth:`Gallery.save` / :meth:`Gallery.load`) are uncompressed ``.npz`` zips of four plain
arrays (``names``, ``embeddings``, ``counts``, ``meta`` JSON); no pickle. Saving writes a temporary
file, fsyncs and renames it over the target, so a crash (even ``kill -9``) keeps the previous
gallery and a concurrent reader sees the old or the new file. Loading checks the zip directory and
every array header against the file size **before** inflating anything, then validates the
contents (finite, centroid norms in (0, 1], names non-empty without NUL, unique, the model name).
"""
from __future__ import annotations

import json
import logging
import math
import os
import struct
import threading
import time
import zipfile
import zlib
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .errors import GalleryError
from .fileio import atomic_write

__all__ = ["VectorIndex", "NumpyIndex", "Gallery", "make_index", "check_name", "UNKNOWN", "FORMAT",
           "MAX_GALLERY_BYTES"]

log = logging.getLogger(__name__)

FORMAT = "nestspk-gallery/1"
UNKNOWN = "<unknown>"
"""Name :meth:`Gallery.identify` (and ``Verifier.identify``) answers when no speaker reaches the threshold; reserved."""
MAX_GALLERY_BYTES = 1 << 31
"""Largest total uncompressed size of a gallery file accepted by :meth:`Gallery.load` (2 GiB; about 1M 512-d speakers)."""
MAX_NAME_CHARS = 1000
_MEMBERS = ("names", "embeddings", "counts", "meta")
_MAX_RATIO = 200  # uncompressed / compressed size per zip member (a zip bomb is ~1000x)
_NORM_MAX = 1.0 + 1e-3  # a mean of unit vectors has norm <= 1
_NORM_MIN = 1e-3
_LOAD_RETRIES = 3


# --------------------------------------------------------------------------- index protocol


@runtime_checkable
class VectorIndex(Protocol):
    """Store of named L2-normalised vectors with k-nearest search by inner product (= cosine)."""

    dim: int

    def add(self, names: Sequence[str], vectors: np.ndarray) -> None:
        """Add ``vectors`` ``(N, dim)`` float32, L2-normalised, under new unique ``names``."""

    def remove(self, names: Sequence[str]) -> None:
        """Remove ``names``; an unknown name raises GalleryError (nothing removed)."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """``(Q, min(k, len))`` cosine scores, best first, and the matching names, for ``(Q, dim)`` queries."""

    def names(self) -> list[str]:
        """Stored names, in insertion order."""

    def vectors(self) -> np.ndarray:
        """``(N, dim)`` float32 vectors in :meth:`names` order."""

    def __len__(self) -> int:
        ...


class NumpyIndex:
    """Exact inner-product index over a dense float32 matrix (the default)."""

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self._names: list[str] = []
        self._pos: dict[str, int] = {}
        self._buf = np.zeros((16, self.dim), np.float32)  # rows [0, len) in use; grows by doubling

    @property
    def _mat(self) -> np.ndarray:
        return self._buf[:len(self._names)]

    def add(self, names: Sequence[str], vectors: np.ndarray) -> None:
        names = list(names)
        v = _as_vectors(vectors, self.dim, "vectors")
        if len(names) != v.shape[0]:
            raise GalleryError(f"add: {len(names)} names for {v.shape[0]} vectors")
        clash = [n for n in names if n in self._pos]
        if clash or len(set(names)) != len(names):
            raise GalleryError(f"add: names already present or repeated: {clash[:5] or names[:5]}")
        n0 = len(self._names)
        if n0 + len(names) > len(self._buf):  # amortised O(1) per add: enrolling N one by one is O(N), not O(N^2)
            grown = np.zeros((max(2 * len(self._buf), n0 + len(names)), self.dim), np.float32)
            grown[:n0] = self._buf[:n0]
            self._buf = grown
        self._buf[n0:n0 + len(names)] = v
        for n in names:
            self._pos[n] = len(self._names)
            self._names.append(n)

    def remove(self, names: Sequence[str]) -> None:
        names = list(names)
        unknown = [n for n in names if n not in self._pos]
        if unknown:
            raise GalleryError(f"remove: unknown speaker(s) {unknown[:5]}")
        drop = {self._pos[n] for n in names}
        keep = [i for i in range(len(self._names)) if i not in drop]
        self._buf = np.concatenate([self._buf[keep], np.zeros((max(16 - len(keep), 0), self.dim), np.float32)])
        self._names = [self._names[i] for i in keep]
        self._pos = {n: i for i, n in enumerate(self._names)}

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        q = _as_vectors(queries, self.dim, "queries")
        k = min(_positive_int(k, "k"), len(self._names))
        # einsum without BLAS: each score is summed in the same order wherever its row sits (exact, reproducible)
        scores = np.einsum("qd,nd->qn", q.astype(np.float64), self._mat.astype(np.float64))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(scores, order, axis=1)
        return top, [[self._names[i] for i in row] for row in order]

    def names(self) -> list[str]:
        return list(self._names)

    def vectors(self) -> np.ndarray:
        return self._mat.copy()

    def __len__(self) -> int:
        return len(self._names)


def make_index(index: "str | VectorIndex", dim: int) -> VectorIndex:
    """``"numpy"`` -> :class:`NumpyIndex`, ``"faiss"`` -> the FAISS index (extra ``nestspk[faiss]``), or ``index`` itself."""
    if isinstance(index, str):
        if index == "numpy":
            return NumpyIndex(dim)
        if index == "faiss":
            try:
                from .faiss_index import FaissIndex  # type: ignore[import-not-found]
            except ImportError as e:
                raise GalleryError(f"index='faiss' needs the faiss extra: pip install 'nestspk[faiss]' ({e})") from e
            return FaissIndex(dim)
        raise GalleryError(f"index must be 'numpy', 'faiss' or a VectorIndex; got {index!r:.80}")
    missing = [m for m in ("add", "remove", "search", "names", "vectors", "__len__") if not hasattr(index, m)]
    if missing or getattr(index, "dim", None) != dim:
        raise GalleryError(f"index {type(index).__name__} is not a VectorIndex of dim {dim} (missing {missing},"
                           f" dim {getattr(index, 'dim', None)})")
    if len(index):
        raise GalleryError(f"index {type(index).__name__} must be empty; it holds {len(index)} vectors")
    return index


# --------------------------------------------------------------------------- validation helpers


def _positive_int(v: object, what: str) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or int(v) < 1:
        raise GalleryError(f"{what} must be a positive int; got {v!r:.80}")
    return int(v)


def _as_vectors(x: object, dim: int, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != dim or a.dtype.kind not in "fiu":
        raise GalleryError(f"{what} must be (N, {dim}) real numbers; got shape {a.shape} dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise GalleryError(f"{what} contain NaN or inf")
    return a


def check_name(name: object) -> str:
    """``name`` if it is a usable speaker name (non-empty str, no NUL, not reserved, <= 1000 chars); else GalleryError."""
    if not isinstance(name, str) or not name.strip():
        raise GalleryError(f"speaker name must be a non-empty string, got {name!r:.80}")
    if "\x00" in name:
        raise GalleryError(f"speaker name must not contain NUL characters, got {name!r:.80}")
    if len(name) > MAX_NAME_CHARS:
        raise GalleryError(f"speaker name longer than {MAX_NAME_CHARS} characters ({len(name)})")
    if name == UNKNOWN:
        raise GalleryError(f"speaker name {UNKNOWN!r} is reserved (identify() answers it for no match)")
    return name


def _normalise(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------------------- gallery


class Gallery:
    """Enrolled speakers: centroid (mean of unit embeddings) and count per name, searched through a VectorIndex.

    Thread-safe: every method takes the gallery's lock.

    Args:
        dim: embedding dimension.
        model: name of the model whose embeddings are enrolled (recorded in files and checked on load).
        index: ``"numpy"`` (exact, default), ``"faiss"`` or an empty :class:`VectorIndex` of ``dim``.
    """

    def __init__(self, dim: int, model: str | None = None, index: "str | VectorIndex" = "numpy") -> None:
        self.dim = _positive_int(dim, "dim")
        self.model = model
        self._index_spec = index if isinstance(index, str) else type(index).__name__
        self._index = make_index(index, self.dim)
        # float32 mean of the unit embeddings (as stored in files, so a save/load round trip is exact)
        self._means: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.RLock()

    # -- content ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._counts)

    def __contains__(self, name: object) -> bool:
        return name in self._counts

    @property
    def speakers(self) -> list[str]:
        """Enrolled names, in enrolment order."""
        with self._lock:
            return list(self._counts)

    def count(self, name: str) -> int:
        """Number of recordings enrolled for ``name``."""
        with self._lock:
            if name not in self._counts:
                raise GalleryError(f"unknown speaker {name!r:.80}")
            return self._counts[name]

    def centroid(self, name: str) -> np.ndarray:
        """Mean (not normalised) of ``name``'s enrolled embeddings, float32 ``(dim,)``."""
        with self._lock:
            self.count(name)
            return self._means[name].copy()

    def enroll(self, name: str, embeddings: np.ndarray) -> None:
        """Add (or extend) ``name`` with ``(n, dim)`` L2-normalised embeddings; the centroid is the running mean."""
        check_name(name)
        e = _as_vectors(embeddings, self.dim, f"embeddings of {name!r:.80}")
        if e.shape[0] == 0:
            raise GalleryError(f"enroll({name!r:.80}): no embeddings given")
        norms = np.linalg.norm(e.astype(np.float64), axis=1)
        if np.any(np.abs(norms - 1.0) > 1e-3):
            raise GalleryError(f"enroll({name!r:.80}): embeddings must be L2-normalised (norms {norms.min():.3g}"
                               f"..{norms.max():.3g})")
        with self._lock:
            n_old = self._counts.get(name, 0)
            total = e.astype(np.float64).sum(axis=0)
            if n_old:
                total += self._means[name].astype(np.float64) * n_old
            mean = (total / (n_old + e.shape[0])).astype(np.float32)
            if np.linalg.norm(mean) < _NORM_MIN:
                raise GalleryError(f"enroll({name!r:.80}): the embeddings cancel out (near-zero centroid)")
            if n_old:
                self._index.remove([name])
            self._index.add([name], _normalise(mean.astype(np.float64))[None])
            self._means[name] = mean
            self._counts[name] = n_old + e.shape[0]

    def remove(self, name: str) -> None:
        """Forget speaker ``name``; GalleryError if it is not enrolled."""
        with self._lock:
            if name not in self._counts:
                raise GalleryError(f"remove: unknown speaker {name!r:.80}; enrolled: {self.speakers[:10]}")
            self._index.remove([name])
            del self._means[name], self._counts[name]

    def clear(self) -> None:
        """Remove every speaker."""
        with self._lock:
            if self._counts:
                self._index.remove(list(self._counts))
            self._means.clear()
            self._counts.clear()

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, list[str]]:
        """Best ``min(k, len)`` speakers of one L2-normalised ``(dim,)`` query: ``(scores, names)``, best first."""
        k = _positive_int(k, "top_k")
        with self._lock:
            if not self._counts:
                raise GalleryError("the gallery is empty; enroll() speakers first")
            scores, names = self._index.search(_as_vectors(query, self.dim, "query"), k)
        return np.asarray(scores[0], dtype=np.float64), list(names[0])

    def identify(self, query: np.ndarray, top_k: int = 5, threshold: float | None = None) -> list[tuple[str, float]]:
        """Up to ``top_k`` ``(name, cosine)`` pairs, best first; with ``threshold``, only those scoring
        ``>= threshold``, or ``[(UNKNOWN, best score)]`` when none does."""
        scores, names = self.search(query, top_k)
        return apply_threshold(list(zip(names, scores.tolist())), threshold)

    # -- files -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the gallery to ``path`` atomically (temporary file, fsync, rename); see the module docstring."""
        with self._lock:
            names = list(self._counts)
            emb = np.stack([self._means[n] for n in names]) if names else np.zeros((0, self.dim), np.float32)
            counts = np.array([self._counts[n] for n in names], dtype=np.int64)
        meta = json.dumps({"format": FORMAT, "model": self.model, "embed_dim": self.dim})
        try:
            with atomic_write(path) as f:
                np.savez(f, names=np.array(names, dtype=np.str_), embeddings=emb, counts=counts, meta=np.array(meta))
        except OSError as e:
            raise GalleryError(f"{path}: cannot write the gallery ({e.strerror or e})") from e

    @classmethod
    def load(cls, path: str | os.PathLike, model: str | None = None, dim: int | None = None,
             index: "str | VectorIndex" = "numpy", max_bytes: int = MAX_GALLERY_BYTES) -> "Gallery":
        """Read a gallery file; GalleryError naming ``path`` for anything missing, malformed or of another model.

        ``model``/``dim``, when given, must match the file's. Loads that overlap a save are retried.
        """
        arrays = _read_npz(Path(path), max_bytes)
        names, emb, counts, meta = (arrays[k] for k in _MEMBERS)
        label = str(path)
        if not isinstance(meta, dict):
            raise GalleryError(f"{label}: not a nestspk gallery file (meta is not a JSON object)")
        if meta.get("format") != FORMAT:
            raise GalleryError(f"{label}: unknown gallery format {str(meta.get('format'))[:80]!r}")
        if model is not None and meta.get("model") != model:
            raise GalleryError(f"{label}: gallery was made with model {str(meta.get('model'))[:80]!r},"
                               f" this verifier uses {model!r}")
        want_dim = dim if dim is not None else (emb.shape[1] if emb.ndim == 2 else -1)
        if meta.get("embed_dim") not in (None, want_dim):
            raise GalleryError(f"{label}: meta says embed_dim {str(meta.get('embed_dim'))[:20]}, the"
                               f" embeddings are {emb.shape}")
        if names.ndim != 1 or emb.ndim != 2 or emb.shape != (len(names), want_dim) or counts.shape != names.shape:
            raise GalleryError(f"{label}: inconsistent shapes names {names.shape}, embeddings {emb.shape},"
                               f" counts {counts.shape} (expected dim {want_dim})")
        if names.dtype.kind != "U" or emb.dtype.kind != "f" or counts.dtype.kind not in "iu":
            raise GalleryError(f"{label}: wrong dtypes names {names.dtype}, embeddings {emb.dtype}, counts {counts.dtype}")
        name_list = [str(n) for n in names.tolist()]
        for i, n in enumerate(name_list):
            try:
                check_name(n)
            except GalleryError as e:
                raise GalleryError(f"{label}: speaker {i}: {e}") from None
        if len(set(name_list)) != len(name_list):
            raise GalleryError(f"{label}: duplicate speaker names")
        if not np.isfinite(emb).all():
            raise GalleryError(f"{label}: non-finite embeddings")
        if (counts < 1).any() or (counts > 2**40).any():
            raise GalleryError(f"{label}: invalid counts (must be >= 1)")
        norms = np.linalg.norm(emb.astype(np.float64), axis=1)
        bad = np.nonzero((norms < _NORM_MIN) | (norms > _NORM_MAX))[0]
        if bad.size:
            raise GalleryError(f"{label}: centroid of speaker {name_list[bad[0]]!r:.80} has norm {norms[bad[0]]:.4g}"
                               f" (a mean of unit embeddings lies in (0, 1]); {bad.size} such")
        g = cls(want_dim, meta.get("model") if model is None else model, index)
        g._load_rows(name_list, emb.astype(np.float32), counts.astype(np.int64))
        return g

    def _load_rows(self, names: list[str], means: np.ndarray, counts: np.ndarray) -> None:
        with self._lock:
            if names:
                self._index.add(names, _normalise(means.astype(np.float64)))
            for i, n in enumerate(names):
                self._means[n] = means[i].copy()
                self._counts[n] = int(counts[i])


def apply_threshold(ranked: list[tuple[str, float]], threshold: float | None) -> list[tuple[str, float]]:
    """Keep the pairs scoring ``>= threshold``; ``[(UNKNOWN, best)]`` when none does (``threshold=None``: all)."""
    if threshold is None or not ranked:
        return ranked
    kept = [(n, s) for n, s in ranked if s >= threshold]
    return kept or [(UNKNOWN, ranked[0][1])]


# --------------------------------------------------------------------------- bounded .npz reading


def _read_npz(path: Path, max_bytes: int) -> dict[str, object]:
    """The four gallery arrays of ``path`` (meta parsed as JSON), checked before inflating; retried if a save overlaps."""
    if not path.exists():
        raise GalleryError(f"{path}: gallery file not found")
    if path.is_dir():
        raise GalleryError(f"{path}: is a directory, not a gallery file")
    for attempt in range(_LOAD_RETRIES):
        try:
            before = os.stat(path)
            return _read_npz_once(path, max_bytes)
        except GalleryError:
            try:
                after = os.stat(path)
            except OSError:
                after = None
            # a save renamed a new file over this one while we read: read the new one
            if after is None or (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns) \
                    or attempt == _LOAD_RETRIES - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


_BAD_FILE = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, KeyError, TypeError,
             struct.error, zlib.error, NotImplementedError, RuntimeError, RecursionError, MemoryError,
             UnicodeDecodeError, OverflowError, IndexError)


def _read_npz_once(path: Path, max_bytes: int) -> dict[str, object]:
    label = str(path)
    try:
        size = path.stat().st_size
        if size == 0:
            raise GalleryError(f"{label}: not a nestspk gallery file (empty file)")
        with open(path, "rb") as raw, zipfile.ZipFile(raw) as z:
            infos = {i.filename: i for i in z.infolist()}
            want = {m + ".npy" for m in _MEMBERS}
            if set(infos) != want:
                extra, missing = sorted(set(infos) - want)[:5], sorted(want - set(infos))
                raise GalleryError(f"{label}: not a nestspk gallery file (members: missing {missing}, unexpected"
                                   f" {extra})")
            total = sum(i.file_size for i in infos.values())
            if total > max_bytes:
                raise GalleryError(f"{label}: inflates to {total} bytes, more than the {max_bytes} allowed")
            for i in infos.values():
                if i.file_size > _MAX_RATIO * max(i.compress_size, 1) + 4096:
                    raise GalleryError(f"{label}: member {i.filename} inflates {i.file_size} bytes from"
                                       f" {i.compress_size} (ratio > {_MAX_RATIO}: a zip bomb?)")
            out: dict[str, object] = {}
            for m in _MEMBERS:
                out[m] = _read_member(z, infos[m + ".npy"], label)
    except GalleryError:
        raise
    except _BAD_FILE as e:
        raise GalleryError(f"{label}: not a nestspk gallery file ({type(e).__name__}: {str(e)[:160]})") from e
    try:
        meta = json.loads(str(out["meta"]))
    except (ValueError, RecursionError) as e:
        raise GalleryError(f"{label}: not a nestspk gallery file (meta is not JSON: {str(e)[:80]})") from e
    out["meta"] = meta
    return out


_ALLOWED_KINDS = {"names": "U", "embeddings": "f", "counts": "iu", "meta": "U"}


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> np.ndarray:
    """One ``.npy`` member: header checked (dtype kind, shape x itemsize == stored size) before reading data."""
    member = info.filename[:-4]
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=4096)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=4096)
        else:
            raise GalleryError(f"{label}: {member}: unsupported .npy version {version}")
        if dtype.hasobject or dtype.kind not in _ALLOWED_KINDS[member] or dtype.fields is not None:
            raise GalleryError(f"{label}: {member} has dtype {dtype}; expected kind {_ALLOWED_KINDS[member]!r}")
        header = f.tell()
        nbytes = math.prod(shape) * dtype.itemsize
        if header + nbytes != info.file_size:
            raise GalleryError(f"{label}: {member}: header says shape {shape} ({nbytes} bytes) but the member holds"
                               f" {info.file_size - header} bytes")
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise GalleryError(f"{label}: {member}: truncated ({len(data)} of {nbytes} bytes)")
    arr = np.frombuffer(data, dtype=dtype)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
