"""Corpus embedding on Ray Data (extra ``ray``): decode in Ray tasks, embed in an actor pool, write Parquet.

    import ray
    from nestspk.ray_embed import embed_dataset

    ray.init()                                     # or ray.init(address="auto") on a cluster
    summary = embed_dataset(paths, "embeddings/", model="nested", batch_size=32)

Pipeline: ``path`` rows -> ``map`` (a Ray task per block: :func:`~nestspk.audio.load_audio`, the
same decoding as :class:`~nestspk.verifier.Verifier`) -> ``map_batches`` on an actor pool (each actor
builds one ``Verifier``, so one model per actor, on a GPU when the actor has one) -> Parquet files
in ``output`` with columns ``path`` (string), ``model`` (string), ``embedding`` (list<float32>,
L2-normalised; null on error) and ``error`` (string; null on success).

A file that cannot be read, decoded or embedded becomes a row with its ``error`` message, never a
crash of the run. With ``resume=True`` (default) the paths already in ``output`` (embedded or
failed) are skipped, so an interrupted run continues where it stopped; a Parquet file left
unreadable by the interruption is renamed ``*.incomplete`` and its paths are embedded again.

Embeddings equal ``nestspk embed``'s bit for bit with the same backend and the same thread count
(measured on examples/*.flac, CPU): the ONNX backend gives identical rows; torch does when the CLI
runs with the actor's thread count (Ray sets an actor's OMP_NUM_THREADS to its ``num_cpus``, 1 by
default) and differs in the last bits otherwise (<= 1.1e-7 against a 2-thread CLI run). Files are
decoded whole (resampled in one piece), so non-16 kHz files longer than 20 s may differ from the
streamed CLI path in the last bits.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .extras import require

__all__ = ["embed_dataset", "read_embeddings", "cli_embed", "SCHEMA_COLUMNS"]

log = logging.getLogger(__name__)

SCHEMA_COLUMNS = ("path", "model", "embedding", "error")


def _ray() -> Any:
    require("pyarrow", "ray", "nestspk.ray_embed")
    return require("ray", "ray", "nestspk.ray_embed (embed --ray)")


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    """Ray task body: one ``path`` row -> ``{path, audio (16 kHz float32), error}``; never raises."""
    from .audio import load_audio

    path = str(row["path"])
    try:
        wav = load_audio(path)
        return {"path": path, "audio": wav, "error": ""}
    except Exception as e:  # noqa: BLE001 - a bad file must become an error row, whatever the decoder raised
        return {"path": path, "audio": np.zeros(0, np.float32), "error": _message(path, e)}


def _message(path: str, e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if path in text else f"{path}: {type(e).__name__}: {text}"


class _EmbedActor:
    """One Verifier per actor; ``__call__`` embeds a batch of decoded rows into a pyarrow table."""

    def __init__(self, model: str, backend: str, device: str, precision: str, vad: bool):
        from .verifier import Verifier

        self.verifier = Verifier(model, device=device, backend=backend, precision=precision, vad=vad)
        self.model_name = self.verifier.model_name

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        from .errors import NestspkError

        paths = [str(p) for p in batch["path"]]
        errors: list[str | None] = [str(e) or None for e in batch["error"]]
        embs: list[np.ndarray | None] = [None] * len(paths)
        ok = [i for i, e in enumerate(errors) if e is None]
        wavs = {i: np.asarray(batch["audio"][i], dtype=np.float32) for i in ok}
        try:
            if ok:
                for i, e in zip(ok, self.verifier.embed_batch([wavs[i] for i in ok], batch_size=max(1, len(ok)))):
                    embs[i] = e
        except Exception:  # noqa: BLE001 - find the bad item(s) one by one, keep the good ones
            for i in ok:
                try:
                    embs[i] = self.verifier.embed(wavs[i])
                except NestspkError as e:
                    errors[i] = _message(paths[i], e)
                except Exception as e:  # noqa: BLE001
                    errors[i] = _message(paths[i], e)
        return pa.table({
            "path": pa.array(paths, pa.string()),
            "model": pa.array([self.model_name] * len(paths), pa.string()),
            "embedding": pa.array([None if e is None else e.astype(np.float32) for e in embs],
                                  pa.list_(pa.float32())),
            "error": pa.array(errors, pa.string()),
        })


def _done_paths(output: Path) -> set[str]:
    """Paths already in ``output``'s Parquet files; unreadable files are renamed ``*.incomplete``."""
    import pyarrow.parquet as pq

    done: set[str] = set()
    if not output.is_dir():
        return done
    for f in sorted(output.glob("*.parquet")):
        try:
            done.update(pq.read_table(f, columns=["path"]).column("path").to_pylist())
        except Exception as e:  # noqa: BLE001 - a file cut short by an interrupted run
            log.warning("%s: unreadable (%s); renamed to .incomplete, its files will be embedded again", f, e)
            os.replace(f, f.with_name(f.name + ".incomplete"))
    return done


def embed_dataset(ds: Any, output: str | os.PathLike, model: str = "nested", backend: str = "torch",
                  device: str = "auto", precision: str = "fp32", vad: bool = False, batch_size: int = 32,
                  num_actors: int | tuple[int, int] | None = None, gpus_per_actor: float | None = None,
                  cpus_per_actor: float = 1.0, resume: bool = True) -> dict[str, Any]:
    """Embed every ``path`` of ``ds`` into Parquet files under ``output``; returns a summary.

    Args:
        ds: a ``ray.data.Dataset`` with a string column ``path``, or an iterable of paths.
        output: folder of Parquet files (created; new files are added on each run).
        model, backend, device, precision, vad: as for :class:`~nestspk.verifier.Verifier`; ``device="auto"``
            means CUDA in actors that hold a GPU, else CPU.
        batch_size: decoded files per actor call (one ``Verifier.embed_batch``).
        num_actors: actor-pool size, or ``(min, max)`` for autoscaling; default: the cluster's GPU count
            when actors take GPUs, else 1.
        gpus_per_actor: GPUs reserved per actor (fractions share a GPU); default 1 when the cluster has
            GPUs and ``device`` is not ``"cpu"``, else 0.
        cpus_per_actor: CPUs reserved per actor.
        resume: skip paths already present in ``output``.

    Returns:
        ``{"output", "model", "rows", "embedded", "errors", "skipped", "files"}`` for this run
        (``files``: the Parquet files written).

    Raises:
        MissingExtraError: ray or pyarrow is not installed (``pip install 'nestspk[ray]'``).
    """
    ray = _ray()
    import pyarrow.parquet as pq

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not ray.is_initialized():
        ray.init()
    out = Path(output)
    done = _done_paths(out) if resume else set()
    if not hasattr(ds, "map_batches"):
        paths = [os.fspath(p) for p in ds]
        todo = [p for p in paths if p not in done]
        skipped = len(paths) - len(todo)
        if not todo:
            return {"output": str(out), "model": None, "rows": 0, "embedded": 0, "errors": 0,
                    "skipped": skipped, "files": []}
        ds = ray.data.from_items([{"path": p} for p in todo])
    else:
        skipped = None
        if done:
            ds = ds.filter(lambda row: row["path"] not in done)
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if gpus >= 1 and device != "cpu" else 0.0
    if num_actors is None:
        num_actors = max(1, int(gpus // gpus_per_actor)) if gpus_per_actor > 0 else 1
    actor_device = device if device != "auto" else ("cuda" if gpus_per_actor > 0 else "cpu")
    decoded = ds.select_columns(["path"]).map(_decode)
    embedded = decoded.map_batches(
        _EmbedActor, fn_constructor_kwargs={"model": model, "backend": backend, "device": actor_device,
                                            "precision": precision, "vad": vad},
        batch_size=batch_size, batch_format="numpy", concurrency=num_actors, num_gpus=gpus_per_actor,
        num_cpus=cpus_per_actor)
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("*.parquet"))
    embedded.write_parquet(str(out))
    files = sorted(set(out.glob("*.parquet")) - before)
    rows = errors = 0
    model_name = None
    for f in files:
        t = pq.read_table(f, columns=["model", "error"])
        rows += t.num_rows
        errors += t.num_rows - t.column("error").null_count
        if t.num_rows and model_name is None:
            model_name = t.column("model")[0].as_py()
    if skipped is None:
        skipped = len(done)
    log.info("ray embed: %d rows (%d errors) to %s; %d skipped", rows, errors, out, skipped)
    return {"output": str(out), "model": model_name, "rows": rows, "embedded": rows - errors, "errors": errors,
            "skipped": skipped, "files": [str(f) for f in files]}


def read_embeddings(output: str | os.PathLike) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """``(paths, (N, D) float32 embeddings, {path: error})`` from an ``embed_dataset`` folder, sorted by path."""
    require("pyarrow", "ray", "nestspk.ray_embed.read_embeddings")
    import pyarrow.parquet as pq

    paths: list[str] = []
    embs: list[np.ndarray] = []
    failed: dict[str, str] = {}
    for f in sorted(Path(output).glob("*.parquet")):
        t = pq.read_table(f)
        for p, e, err in zip(t.column("path").to_pylist(), t.column("embedding").to_numpy(zero_copy_only=False),
                             t.column("error").to_pylist()):
            if err is not None:
                failed[p] = err
            else:
                paths.append(p)
                embs.append(np.asarray(e, dtype=np.float32))
    order = np.argsort(paths, kind="stable")
    mat = np.stack([embs[i] for i in order]) if embs else np.zeros((0, 0), np.float32)
    return [paths[i] for i in order], mat, failed


def cli_embed(paths: Sequence[str], output: str, address: str, model: str, backend: str, device: str,
              precision: str, vad: bool, batch_size: int, resume: bool, num_actors: int | None,
              gpus_per_actor: float | None) -> dict:
    """``nestspk embed --ray ADDRESS``: connect (``local`` starts a local Ray) and run :func:`embed_dataset`.

    Without ``resume`` an output folder that already holds Parquet files is an error (no duplicate rows).
    """
    from .errors import NestspkError

    ray = _ray()
    if not resume and Path(output).is_dir() and any(Path(output).glob("*.parquet")):
        raise NestspkError(f"{output}: already holds Parquet files; pass --resume to continue that run")
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, log_to_driver=False)
    return embed_dataset(list(paths), output, model=model, backend=backend, device=device, precision=precision,
                         vad=vad, batch_size=batch_size, num_actors=num_actors, gpus_per_actor=gpus_per_actor,
                         resume=resume)

