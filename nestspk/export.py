"""ONNX export of whole speaker models, the int8 variant, and the ``nestspk-export`` command.

The exported graph maps ``waveform`` (B, T) float32 at 16 kHz to ``embedding``
(B, D) float32, L2-normalised: pre-emphasis, log-mel, instance norm, encoder,
pooling, fc and normalisation all live in one graph, with dynamic batch and time
axes and the weights stored inside the single ``.onnx`` file. Running it is
:mod:`nestspk.runtime.onnx_runtime` (numpy + onnxruntime only); this module needs
torch, onnx and onnxscript (``pip install 'nestspk[export]'``), imported lazily.

Exported files carry no stack traces or fx-graph node dumps (node metadata keys
:data:`STRIPPED_NODE_METADATA`): those hold source paths of the exporting checkout
and graph counters, so a re-export from another checkout path is byte-identical.
The module scopes (``pkg.torch.onnx.name_scopes``) stay: the int8 quantiser selects
encoder nodes by them.

Command line (console script ``nestspk-export``)::

    nestspk-export --model nested               # writes <card dir>/nested_4level.onnx and updates the card
    nestspk-export --model nested -o /tmp/x.onnx  # elsewhere: the card is left alone (unless --update-card)
    nestspk-export --all                        # both shipped models, cards updated with parity
    nestspk-export --all --int8                 # plus the int8 CPU variants: parity, dev/test EER, operating points

Every input (model cards, weights, real clips for parity, the int8 calibration list
and its audio, trial lists) is checked before anything is written. Every model is
exported into a temporary folder first; only then are the files written into place and
the cards saved, each atomically (:func:`nestspk.fileio.atomic_write`), so a failure
leaves the previous files and cards as they were.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from .audio import TARGET_SAMPLE_RATE
from .card import Export, ModelCard, sha256_file, weights_dir
from .errors import NestspkError, WeightsError
from .extras import require
from .fileio import atomic_write
from .runtime import make_session
from .runtime.onnx_runtime import INPUT_NAME, MAX_SAMPLES, MIN_SAMPLES, OUTPUT_NAME

if TYPE_CHECKING:  # pragma: no cover
    from .models import SpeakerModel

log = logging.getLogger(__name__)

__all__ = [
    "export_onnx",
    "check_onnx",
    "measure_parity",
    "strip_node_metadata",
    "main",
]

DEFAULT_OPSET = 18
DEFAULT_FRONTEND_DFT = "factored"  # the front-end DFT written into exported graphs
PARITY_COSINE_MIN = 0.9999
"""Minimum cosine(torch, onnx) accepted by :func:`export_onnx`'s self-check."""
INT8_COSINE_MIN = 0.98
"""Minimum cosine(torch fp32, int8 onnx) on real clips accepted by ``nestspk-export --int8``."""
CHECK_SECONDS = (1.3, 4.0, 9.7)
"""Lengths (s) used to check dynamic axes; 1.3 s and 9.7 s give frame counts that are not multiples of 4."""
CHECK_BATCHES = (1, 3)
STRIPPED_NODE_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node", "namespace",
                          "pkg.torch.onnx.class_hierarchy")
"""Node metadata keys removed from exported files (source paths and fx-graph counters: not reproducible)."""
# Example lengths (samples) tried by the dynamo exporter, in order. A "round" length
# such as 32000 makes torch.export specialise the time axis to a multiple of 640.
_EXAMPLE_SAMPLES = (48037, 33333, 57119)


# --------------------------------------------------------------------------- export (torch)


def _embedding_module(model: "SpeakerModel", frontend_dft: str = DEFAULT_FRONTEND_DFT):
    """Wrap ``model.embed`` as a module whose ``forward(waveform)`` is the whole graph.

    The front end is rebuilt from ``model.frontend_cfg`` with ``frontend_dft`` (same
    parameters; "factored" is the faster DFT in onnxruntime, see :mod:`nestspk.features`).
    """
    import torch
    import torch.nn.functional as F

    from .features import LogMelFrontend

    class _Embed(torch.nn.Module):
        def __init__(self, frontend: torch.nn.Module, encoder: torch.nn.Module):
            super().__init__()
            self.frontend = frontend
            self.encoder = encoder

        def forward(self, waveform: torch.Tensor) -> torch.Tensor:
            return F.normalize(self.encoder(self.frontend(waveform)), dim=-1)

    frontend = LogMelFrontend(model.frontend_cfg, dft=frontend_dft).to(next(model.parameters()).device)
    return _Embed(frontend, model.encoder).eval()


def _export_dynamo(module, path: Path, opset: int) -> None:
    import torch

    Dim = torch.export.Dim
    errors = []
    for n in _EXAMPLE_SAMPLES:
        shapes = {"waveform": {0: Dim("batch", min=1, max=4096), 1: Dim("time", min=MIN_SAMPLES, max=MAX_SAMPLES)}}
        example = torch.randn(2, n, generator=torch.Generator().manual_seed(0)) * 0.1
        try:
            torch.onnx.export(
                module, (example,), str(path), dynamo=True, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=shapes,
                external_data=False, verbose=False,
            )
            return
        except Exception as e:  # torch.export raises many types; try the next example length
            msg = str(e)
            i = msg.find("Exception summary")
            errors.append(f"example T={n}: {type(e).__name__}: {msg[i:i + 300] if i >= 0 else msg[:300]}")
            log.info("dynamo export with example T=%d failed: %s", n, errors[-1])
    raise RuntimeError("; ".join(errors))


def _export_torchscript(module, path: Path, opset: int) -> None:
    import torch

    example = torch.randn(2, _EXAMPLE_SAMPLES[0], generator=torch.Generator().manual_seed(0)) * 0.1
    torch.onnx.export(
        module, (example,), str(path), dynamo=False, opset_version=opset,
        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch", 1: "time"}, OUTPUT_NAME: {0: "batch"}},
    )


def strip_node_metadata(proto, keys: Sequence[str] = STRIPPED_NODE_METADATA) -> int:
    """In place: drop node ``metadata_props`` with these ``keys`` (all graphs, subgraphs included); returns the count."""
    count = 0

    def graphs(g) -> Iterator[Any]:
        yield g
        for node in g.node:
            for attr in node.attribute:
                if attr.g is not None and attr.HasField("g"):
                    yield from graphs(attr.g)
                for sub in attr.graphs:
                    yield from graphs(sub)

    for g in graphs(proto.graph):
        for node in g.node:
            keep = [p for p in node.metadata_props if p.key not in keys]
            if len(keep) != len(node.metadata_props):
                count += len(node.metadata_props) - len(keep)
                del node.metadata_props[:]
                node.metadata_props.extend(keep)
    for fn in proto.functions:
        for node in fn.node:
            keep = [p for p in node.metadata_props if p.key not in keys]
            count += len(node.metadata_props) - len(keep)
            del node.metadata_props[:]
            node.metadata_props.extend(keep)
    return count


def _tag(path: Path, meta: dict[str, str]) -> None:
    """Add ``metadata_props`` to the model and strip non-reproducible node metadata, keeping one file."""
    import onnx

    proto = onnx.load(str(path))
    existing = {p.key: p for p in proto.metadata_props}
    for k, v in meta.items():
        if k in existing:
            existing[k].value = v
        else:
            proto.metadata_props.add(key=k, value=v)
    stripped = strip_node_metadata(proto)
    log.debug("%s: stripped %d node metadata entries", path, stripped)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    onnx.checker.check_model(str(path))


@contextmanager
def quiet_export() -> Iterator[None]:
    """Silence the exporter's INFO chatter and warnings (torchvision, pytree ``LeafSpec``; errors still raise)."""
    names = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._export", "torch.fx", "torch._dynamo")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, lv in levels.items():
            logging.getLogger(n).setLevel(lv)


def export_onnx(
    model: "SpeakerModel",
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    check: bool = True,
    frontend_dft: str = DEFAULT_FRONTEND_DFT,
    name: str | None = None,
) -> Path:
    """Export ``model`` as one ONNX graph: ``waveform`` (B, T) float32 16 kHz -> ``embedding`` (B, D), L2-normalised.

    ``exporter``: "dynamo" (torch.export), "torchscript", or "auto" (dynamo, then
    TorchScript if dynamo fails). ``frontend_dft``: the front end's DFT ("factored" or
    "direct", :class:`nestspk.features.LogMelFrontend`). With ``check`` the file is run with onnxruntime
    at :data:`CHECK_SECONDS` x :data:`CHECK_BATCHES` and compared with torch
    (:func:`check_onnx`); :class:`NestspkError` if cosine < :data:`PARITY_COSINE_MIN`.
    ``name`` (default ``model.name``) is recorded as the file's ``nestspk.model`` metadata.
    Returns the path written.
    """
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"unknown exporter {exporter!r}; choose 'auto', 'dynamo' or 'torchscript'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    module = _embedding_module(model, frontend_dft)
    used = exporter
    try:
        if exporter in ("auto", "dynamo"):
            try:
                with quiet_export():
                    _export_dynamo(module, path, opset)
                used = "dynamo"
            except Exception as e:
                if exporter == "dynamo":
                    raise NestspkError(f"dynamo ONNX export of {model.name} failed: {e}") from e
                log.warning("dynamo export failed (%s); falling back to the TorchScript exporter", str(e)[:300])
                exporter = "torchscript"
        if exporter == "torchscript":
            with quiet_export():
                _export_torchscript(module, path, opset)
            used = "torchscript"
    finally:
        model.train(was_training)
    for extra in path.parent.glob(path.name + ".data"):
        raise NestspkError(f"{path}: exporter wrote external data {extra}; expected one self-contained file")
    _tag(path, {
        "nestspk.model": name or model.name,
        "nestspk.sample_rate": str(model.frontend_cfg.sample_rate),
        "nestspk.embed_dim": str(model.embed_dim),
        "nestspk.exporter": used,
        "nestspk.frontend_dft": frontend_dft,
        "nestspk.io": f"{INPUT_NAME} (B, T) float32 16 kHz -> {OUTPUT_NAME} (B, D) float32 L2-normalised",
    })
    log.info("exported %s to %s with the %s exporter (opset %d, %.1f MB)",
             model.name, path, used, opset, path.stat().st_size / 1e6)
    if check:
        res = check_onnx(model, path)
        if res["cosine_min"] < PARITY_COSINE_MIN:
            raise NestspkError(f"{path}: ONNX output differs from torch (cosine min {res['cosine_min']:.6f}, "
                               f"max abs diff {res['max_abs_diff']:.3g}) at {res['shapes']}")
        log.info("dynamic-axes check passed: %s", res)
    return path


def _compare(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """(min cosine, max abs diff) between two (B, D) embedding batches, computed in float64."""
    ref, out = ref.astype(np.float64), out.astype(np.float64)
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    cos = np.sum(ref * out, axis=1) / np.linalg.norm(out, axis=1)
    return float(cos.min()), float(np.abs(ref - out).max())


def check_onnx(
    model: "SpeakerModel",
    path: str | Path,
    seconds: Sequence[float] = CHECK_SECONDS,
    batches: Sequence[int] = CHECK_BATCHES,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the ONNX file on CPU at every (batch, length) pair of random speech-level noise and compare with torch.

    Returns ``{"cosine_min", "max_abs_diff", "shapes"}``; fails if the graph is not
    dynamic (onnxruntime rejects a shape) or returns the wrong output shape.
    """
    from .runtime.torch_runtime import TorchEmbedder

    torch_embedder = TorchEmbedder.from_model(model, device="cpu")
    sess = make_session(path, "cpu")
    rng = np.random.default_rng(seed)
    cos_min, diff_max, shapes = 1.0, 0.0, []
    for b in batches:
        for s in seconds:
            wav = (0.1 * rng.standard_normal((b, int(round(s * TARGET_SAMPLE_RATE))))).astype(np.float32)
            out = sess.run([OUTPUT_NAME], {INPUT_NAME: wav})[0]
            ref = torch_embedder.embed_batch(wav)
            if out.shape != ref.shape:
                raise NestspkError(f"{path}: ONNX output shape {out.shape} != torch {ref.shape} for input {wav.shape}")
            c, d = _compare(ref, out)
            cos_min, diff_max = min(cos_min, c), max(diff_max, d)
            shapes.append(list(wav.shape))
    return {"cosine_min": cos_min, "max_abs_diff": diff_max, "shapes": shapes}


def measure_parity(
    model: "SpeakerModel",
    path: str | Path,
    clips: Sequence[np.ndarray],
    seconds: Sequence[float] = CHECK_SECONDS,
) -> dict[str, Any]:
    """Parity of torch ``model.embed`` vs the ONNX file (CPU) on real clips (1-D float32, 16 kHz).

    Each clip is embedded whole (batch 1) and cropped from its start to each length in
    ``seconds`` (clips that long, batched). Returns ``{"cosine_min", "max_abs_diff",
    "clips", "lengths"}`` with lengths in seconds (whole clips listed as "full").
    """
    from .runtime.torch_runtime import TorchEmbedder

    if not clips:
        raise ValueError("measure_parity needs at least one clip")
    torch_embedder = TorchEmbedder.from_model(model, device="cpu")
    sess = make_session(path, "cpu")
    cos_min, diff_max = 1.0, 0.0
    batches = [c[None, :] for c in clips]
    for s in seconds:
        n = int(round(s * TARGET_SAMPLE_RATE))
        long_enough = [c[:n] for c in clips if len(c) >= n]
        if long_enough:
            batches.append(np.stack(long_enough))
    for wav in batches:
        wav = np.ascontiguousarray(wav, dtype=np.float32)
        out = sess.run([OUTPUT_NAME], {INPUT_NAME: wav})[0]
        c, d = _compare(torch_embedder.embed_batch(wav), out)
        cos_min, diff_max = min(cos_min, c), max(diff_max, d)
    return {"cosine_min": cos_min, "max_abs_diff": float(f"{diff_max:.3g}"),
            "clips": len(clips), "lengths": ["full", *[float(s) for s in seconds]]}


# --------------------------------------------------------------------------- command line


def _parity_clips(data_root: Path, count: int) -> list[np.ndarray]:
    """First ``count`` LibriSpeech snippets (sorted by name) under ``data_root``, loaded at 16 kHz."""
    from .audio import load_audio

    return [load_audio(str(f)) for f in _clip_files(data_root, count)]


@dataclass
class _Job:
    """One model to export: its card, where the fp32 file goes, and whether the card is updated."""

    card: ModelCard
    out: Path
    update: bool


def _check_inputs(jobs: Sequence[_Job], args: argparse.Namespace) -> None:
    """Everything the export will read, checked before anything is written; NestspkError naming what is missing."""
    from .corpus import missing_data_message

    data_root = Path(args.data)
    missing: list[str] = []
    for job in jobs:
        card = job.card
        try:
            card.verified(card.weights)
        except WeightsError as e:
            missing.append(str(e))
        if not job.out.parent.is_dir():
            missing.append(f"{job.out.parent}: output folder does not exist")
        if args.int8:
            manifest = Path(args.calibration) if args.calibration else card.list_path("train")
            if not manifest.is_file():
                missing.append(f"{manifest}: int8 calibration list not found")
            else:
                from .corpus import read_train_list

                rows = read_train_list(manifest)[:args.calibration_files]
                absent = [p for _, p in rows if not (data_root / p).is_file()]
                if absent or not rows:
                    missing.append(missing_data_message(data_root, f"int8 calibration audio ({len(absent)} of "
                                                        f"{len(rows)} files of {manifest}, e.g. {absent[:1]})"))
            for split in ("dev", "test"):
                if not card.list_path(split).is_file():
                    missing.append(f"{card.list_path(split)}: {split} trial list for the int8 metrics not found")
    needs_clips = args.int8 or not args.no_parity
    if needs_clips and not _clip_files(data_root, 1):
        what = "real clips (librispeech-snippets/train-clean-100/*.flac) for the parity measurement"
        if args.int8 or args.require_parity:
            missing.append(missing_data_message(data_root, what) + "; or pass --no-parity without --int8")
        else:
            log.warning("%s; parity not measured", missing_data_message(data_root, what))
    if missing:
        raise NestspkError("nothing written; missing inputs: " + " | ".join(dict.fromkeys(missing)))


def _clip_files(data_root: Path, count: int) -> list[Path]:
    return sorted((data_root / "librispeech-snippets" / "train-clean-100").glob("*.flac"))[:count]


def _int8_points(card: ModelCard, embedder: Any, data_root: Path) -> tuple[dict, dict]:
    """(metrics on the card's dev and test lists, operating points on dev) of an int8 embedder."""
    from .evaluation import score_trials

    metrics: dict[str, Any] = {}
    points: dict[str, Any] = {}
    for split in ("dev", "test"):
        res = score_trials(embedder, card.list_path(split), data_root)
        metrics[split] = res.metrics() | {"trials": card.lists[split]}
        if split == "dev":
            points = {"fitted_on": Path(card.lists["dev"]).name, "raw": res.operating_points()}
            if card.cohort is not None:
                from .scoring import Cohort

                asn = score_trials(embedder, card.list_path(split), data_root, cohort=Cohort.from_card(card))
                points["asnorm"] = asn.operating_points()
    return metrics, points


def _export_one(job: _Job, args: argparse.Namespace, tmp_dir: Path,
                moves: list[tuple[Path, Path]]) -> tuple[dict, ModelCard]:
    """Export (and quantise) one model into files under ``tmp_dir``, appended to ``moves`` as (tmp, final).

    Returns (result, the updated card, not yet saved).
    """
    from .checkpoints import load_model
    from .runtime.onnx_runtime import OnnxEmbedder

    model, card = load_model(job.card)
    data_root = Path(args.data)
    tmp = tmp_dir / f"{len(moves)}_{job.out.name}"
    moves.append((tmp, job.out))
    export_onnx(model, tmp, opset=args.opset, exporter=args.exporter, frontend_dft=args.frontend_dft, name=card.name)
    parity = None
    clips = [] if args.no_parity and not args.int8 else _parity_clips(data_root, args.clips)
    if clips and not args.no_parity:
        parity = measure_parity(model, tmp, clips)
        if parity["cosine_min"] < PARITY_COSINE_MIN:
            raise NestspkError(f"{card.name}: ONNX parity on real clips too low: {parity}")
    rel = os.path.relpath(job.out.resolve(), card.dir.resolve())
    new = card.with_export("fp32", Export(rel, sha256_file(tmp), parity))
    result: dict[str, Any] = {"model": card.name, "onnx": str(job.out), "bytes": tmp.stat().st_size,
                              "sha256": new.exports["fp32"].sha256, "parity": parity}
    if args.int8:
        from .corpus import read_train_list
        from .quantize import calibration_crops, quantize_onnx

        manifest = Path(args.calibration) if args.calibration else card.list_path("train")
        crops = calibration_crops(read_train_list(manifest), data_root, count=args.calibration_files,
                                  seconds=8.0, seed=0)
        out8 = job.out.with_name(job.out.stem + ".int8.onnx")
        tmp8 = tmp_dir / f"{len(moves)}_{out8.name}"
        moves.append((tmp8, out8))
        quantize_onnx(tmp, tmp8, crops)
        parity8 = measure_parity(model, tmp8, clips)
        if parity8["cosine_min"] < INT8_COSINE_MIN:
            raise NestspkError(f"{card.name}: int8 embeddings too far from torch fp32 on real clips: {parity8}")
        probe = new.with_export("int8", Export(str(tmp8.resolve()), sha256_file(tmp8)))
        metrics, points = _int8_points(probe, OnnxEmbedder(probe, precision="int8"), data_root)
        calib = {"manifest": os.path.relpath(manifest.resolve(), card.dir.resolve()),
                 "files": args.calibration_files, "seconds": 8.0, "seed": 0}
        new = new.with_export("int8", Export(os.path.relpath(out8.resolve(), card.dir.resolve()),
                                             probe.exports["int8"].sha256, parity8, metrics, points, calib))
        result["int8"] = {"onnx": str(out8), "bytes": tmp8.stat().st_size, "sha256": new.exports["int8"].sha256,
                          "parity": parity8, "metrics": metrics, "operating_points": points}
    return result, new


def _jobs(args: argparse.Namespace) -> list[_Job]:
    if args.all:
        if args.output:
            raise ValueError("-o/--output is not used with --all (files are written beside the cards)")
        jobs = []
        for c in sorted(weights_dir().glob("*.json")):
            try:
                card = ModelCard.load(c)
            except WeightsError as e:
                log.info("%s: not a model card (%s)", c, e)
                continue
            jobs.append(_Job(card, card.dir / f"{card.name}.onnx", True))
        if not jobs:
            raise NestspkError(f"no model cards in {weights_dir()}")
        return jobs
    card = ModelCard.load(args.model)
    out = Path(args.output) if args.output else card.dir / f"{card.name}.onnx"
    if out.suffix != ".onnx":
        raise ValueError(f"output {out} must end in .onnx")
    named = {card.resolve(e.file).resolve() for e in card.exports.values()}
    update = args.update_card or out.resolve() in named or args.output is None
    if args.output is not None and out.resolve() in named and not args.update_card:
        log.warning("%s is the file the %s card names: the card is updated to match it", out, card.name)
    return [_Job(card, out, update)]


def main(argv: Sequence[str] | None = None) -> int:
    """``nestspk-export``: export models to ONNX; exit status 0 on success, 1 with a one-line message on error."""
    from .corpus import default_data_root

    p = argparse.ArgumentParser(prog="nestspk-export", description=__doc__.split("\n\n")[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="shipped model name or alias (nested, resnetse34l, ...) or a .json card / .pt path")
    which.add_argument("--all", action="store_true", help="export every shipped model beside its card and update the cards")
    p.add_argument("-o", "--output", help="output .onnx (with --model; default: <card dir>/<name>.onnx, which "
                                          "updates the card). Writing the file a card names always updates that card")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s)")
    p.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto",
                   help="torch exporter: dynamo, torchscript, or auto (dynamo, then torchscript)")
    p.add_argument("--frontend-dft", choices=("factored", "direct"), default=DEFAULT_FRONTEND_DFT,
                   help="DFT of the exported front end (same spectrum; factored is faster in onnxruntime)")
    p.add_argument("--update-card", action="store_true",
                   help="name the written file(s), their sha256, parity and int8 metrics in the card")
    p.add_argument("--data", default=str(default_data_root()),
                   help="data root holding librispeech-snippets/ for parity and int8 calibration "
                        "(default: $NESTSPK_DATA or ../shared/data)")
    p.add_argument("--clips", type=int, default=8, help="number of real clips for the parity measurement")
    p.add_argument("--no-parity", action="store_true", help="skip the parity measurement on real clips")
    p.add_argument("--require-parity", action="store_true", help="fail (before writing) when no real clips are found")
    p.add_argument("--int8", action="store_true",
                   help="also write <name>.int8.onnx (static int8, calibrated on real speech) and measure its "
                        "parity, dev/test EER and dev operating points (stored in the card when it is updated)")
    p.add_argument("--calibration", default=None, help="speaker-path list for int8 calibration "
                                                       "(default: the card's train list)")
    p.add_argument("--calibration-files", type=int, default=48, help="files (one 8 s crop each) for int8 calibration")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:
        logging.getLogger("nestspk").setLevel(logging.INFO)
    results = []
    try:
        for module in ("torch", "onnx", "onnxscript"):
            require(module, "export", "nestspk-export")
        jobs = _jobs(args)
        _check_inputs(jobs, args)
        moves: list[tuple[Path, Path]] = []
        cards = []
        with tempfile.TemporaryDirectory(prefix="nestspk-export-") as tmp, quiet_export():
            for job in jobs:  # everything into temporary files first: a failure leaves all files and cards as they were
                result, new = _export_one(job, args, Path(tmp), moves)
                results.append(result)
                cards.append(new if job.update else None)
            for staged, final in moves:
                with atomic_write(final) as f:
                    f.write(staged.read_bytes())
        for result, new in zip(results, cards):
            if new is not None:
                result["card"] = str(new.save())
    except (NestspkError, OSError, ValueError, ImportError) as e:
        msg = " ".join(str(e).split())
        print(f"nestspk-export: error: {msg[:2000]}", file=sys.stderr)
        return 1
    for r in results:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
