"""ONNX export of whole speaker models and torch-free inference with onnxruntime.

The exported graph maps ``waveform`` (B, T) float32 at 16 kHz to ``embedding``
(B, D) float32, L2-normalised: pre-emphasis, log-mel, instance norm, encoder,
pooling, fc and normalisation all live in one graph, with dynamic batch and time
axes and the weights stored inside the single ``.onnx`` file.

:class:`OnnxEmbedder` needs only numpy and onnxruntime: this module must not
import torch at module level (export functions import it lazily).

Command line (console script ``nestspk-export``)::

    nestspk-export --model nested -o weights/nested_4level.onnx --update-card
    nestspk-export --all        # both shipped models, cards updated with parity
    nestspk-export --all --int8 # plus the int8 CPU variants, with parity and dev/test EER
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .checkpoints import read_card, resolve_card, sha256_file, verified_path
from .errors import AudioError, NestspkError, WeightsError

if TYPE_CHECKING:  # pragma: no cover
    from .models import SpeakerModel

log = logging.getLogger(__name__)

__all__ = [
    "OnnxBackendError",
    "OnnxEmbedder",
    "export_onnx",
    "check_onnx",
    "measure_parity",
    "main",
    "INPUT_NAME",
    "OUTPUT_NAME",
]

INPUT_NAME = "waveform"
OUTPUT_NAME = "embedding"
SAMPLE_RATE = 16000
DEFAULT_OPSET = 18
DEFAULT_FRONTEND_DFT = "factored"  # the front-end DFT written into exported graphs
MIN_SAMPLES = 1600
"""Shortest waveform (samples at 16 kHz, 0.1 s) the exported graph is declared and checked for."""
MAX_SAMPLES = SAMPLE_RATE * 3600
PARITY_COSINE_MIN = 0.9999
"""Minimum cosine(torch, onnx) accepted by :func:`export_onnx`'s self-check."""
INT8_COSINE_MIN = 0.98
"""Minimum cosine(torch fp32, int8 onnx) on real clips accepted by ``nestspk-export --int8``."""
CHECK_SECONDS = (1.3, 4.0, 9.7)
"""Lengths (s) used to check dynamic axes; 1.3 s and 9.7 s give frame counts that are not multiples of 4."""
CHECK_BATCHES = (1, 3)
# Example lengths (samples) tried by the dynamo exporter, in order. A "round" length
# such as 32000 makes torch.export specialise the time axis to a multiple of 640.
_EXAMPLE_SAMPLES = (48037, 33333, 57119)


PRECISIONS = ("fp32", "int8")
"""``fp32``: the exact export; ``int8``: the quantised CPU variant (:mod:`nestspk.quantize`)."""
_CARD_KEYS = {"fp32": ("onnx_file", "onnx_sha256"), "int8": ("onnx_int8_file", "onnx_int8_sha256")}


class OnnxBackendError(NestspkError, RuntimeError):
    """onnxruntime cannot run the model as asked (e.g. CUDA execution provider unavailable)."""


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


def _tag(path: Path, meta: dict[str, str]) -> None:
    """Add ``metadata_props`` to the model, keeping the weights inside the single file."""
    import onnx

    proto = onnx.load(str(path))
    existing = {p.key: p for p in proto.metadata_props}
    for k, v in meta.items():
        if k in existing:
            existing[k].value = v
        else:
            proto.metadata_props.add(key=k, value=v)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    onnx.checker.check_model(str(path))


def export_onnx(
    model: "SpeakerModel",
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    check: bool = True,
    frontend_dft: str = DEFAULT_FRONTEND_DFT,
) -> Path:
    """Export ``model`` as one ONNX graph: ``waveform`` (B, T) float32 16 kHz -> ``embedding`` (B, D), L2-normalised.

    ``exporter``: "dynamo" (torch.export), "torchscript", or "auto" (dynamo, then
    TorchScript if dynamo fails). ``frontend_dft``: the front end's DFT ("factored" or
    "direct", :class:`nestspk.features.LogMelFrontend`). With ``check`` the file is run with onnxruntime
    at :data:`CHECK_SECONDS` x :data:`CHECK_BATCHES` and compared with torch
    (:func:`check_onnx`); :class:`NestspkError` if cosine < :data:`PARITY_COSINE_MIN`.
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
                _export_dynamo(module, path, opset)
                used = "dynamo"
            except Exception as e:
                if exporter == "dynamo":
                    raise NestspkError(f"dynamo ONNX export of {model.name} failed: {e}") from e
                log.warning("dynamo export failed (%s); falling back to the TorchScript exporter", str(e)[:300])
                exporter = "torchscript"
        if exporter == "torchscript":
            _export_torchscript(module, path, opset)
            used = "torchscript"
    finally:
        model.train(was_training)
    for extra in path.parent.glob(path.name + ".data"):
        raise NestspkError(f"{path}: exporter wrote external data {extra}; expected one self-contained file")
    _tag(path, {
        "nestspk.model": model.name,
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


def _session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _compare(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """(min cosine, max abs diff) between two (B, D) embedding batches, computed in float64."""
    ref, out = ref.astype(np.float64), out.astype(np.float64)
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    cos = np.sum(ref * out, axis=1) / np.linalg.norm(out, axis=1)
    return float(cos.min()), float(np.abs(ref - out).max())


def _torch_embed(model: "SpeakerModel", wav: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model.embed(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))).float().numpy()


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
    model.eval()
    sess = _session(path)
    rng = np.random.default_rng(seed)
    cos_min, diff_max, shapes = 1.0, 0.0, []
    for b in batches:
        for s in seconds:
            wav = (0.1 * rng.standard_normal((b, int(round(s * SAMPLE_RATE))))).astype(np.float32)
            out = sess.run([OUTPUT_NAME], {INPUT_NAME: wav})[0]
            ref = _torch_embed(model, wav)
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
    if not clips:
        raise ValueError("measure_parity needs at least one clip")
    sess = _session(path)
    cos_min, diff_max = 1.0, 0.0
    batches = [c[None, :] for c in clips]
    for s in seconds:
        n = int(round(s * SAMPLE_RATE))
        long_enough = [c[:n] for c in clips if len(c) >= n]
        if long_enough:
            batches.append(np.stack(long_enough))
    for wav in batches:
        wav = np.ascontiguousarray(wav, dtype=np.float32)
        out = sess.run([OUTPUT_NAME], {INPUT_NAME: wav})[0]
        c, d = _compare(_torch_embed(model, wav), out)
        cos_min, diff_max = min(cos_min, c), max(diff_max, d)
    return {"cosine_min": cos_min, "max_abs_diff": float(f"{diff_max:.3g}"),
            "clips": len(clips), "lengths": ["full", *[float(s) for s in seconds]]}


# --------------------------------------------------------------------------- inference (numpy + onnxruntime)


class OnnxEmbedder:
    """Speaker embeddings from a card's ONNX export with onnxruntime; needs neither torch nor a GPU.

    ``card_or_name``: shipped name/alias, a ``.json`` card or ``.onnx`` path, or a card
    dict from :func:`nestspk.checkpoints.read_card`. The card's ``onnx_file`` is
    sha256-checked against ``onnx_sha256`` before onnxruntime loads it.
    ``device``: "cpu" or "cuda" (CUDA execution provider required, else
    :class:`OnnxBackendError`). ``intra_op_threads``: onnxruntime intra-op threads
    (None: onnxruntime's default). ``precision``: "fp32" (``onnx_file``, matches torch
    to ~1e-7) or "int8" (``onnx_int8_file``, quantised for CPU; its cosine to fp32 and
    its EER are in the card's ``onnx_int8_parity`` / ``onnx_int8_metrics``).
    """

    def __init__(
        self,
        card_or_name: str | os.PathLike | dict = "nested_4level",
        device: str = "cpu",
        intra_op_threads: int | None = None,
        precision: str = "fp32",
    ):
        import onnxruntime as ort

        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if intra_op_threads is not None and int(intra_op_threads) < 1:
            raise ValueError(f"intra_op_threads must be >= 1 or None, got {intra_op_threads!r}")
        if isinstance(card_or_name, dict):
            if "_dir" not in card_or_name:
                raise WeightsError("card dict lacks '_dir'; load it with nestspk.checkpoints.read_card")
            card = card_or_name
        else:
            card = read_card(resolve_card(card_or_name))
        file_key, sha_key = _CARD_KEYS[precision]
        if not card.get(file_key) or not card.get(sha_key):
            flag = " --int8" if precision == "int8" else ""
            raise WeightsError(f"{card['name']}: the model card names no {precision} ONNX export ({file_key}/{sha_key}); "
                               f"create one with: nestspk-export --model {card['name']} --update-card{flag}")
        path = verified_path(card, file_key, sha_key)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads is not None:
            so.intra_op_num_threads = int(intra_op_threads)
        # use_tf32=0: the graph's front end is a convolution; TF32 (10-bit mantissa) would move the log of quiet
        # mel bands by tenths, as cuDNN's TF32 default did in torch (benchmarks/results/frontend_precision_cuda.md)
        want: list = ([("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"] if device == "cuda"
                      else ["CPUExecutionProvider"])
        available = ort.get_available_providers()
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=want)
        except Exception as e:  # onnxruntime raises its own pybind exception types
            if device == "cuda":
                raise OnnxBackendError(f"{path}: onnxruntime CUDA execution provider is unavailable ({str(e)[:200]}); "
                                       f"available providers: {available}") from e
            raise WeightsError(f"{path}: onnxruntime cannot load the model ({str(e)[:300]})") from e
        providers = session.get_providers()
        if device == "cuda" and (not providers or providers[0] != "CUDAExecutionProvider"):
            raise OnnxBackendError(
                f"onnxruntime CUDA execution provider is unavailable (session runs on {providers}; "
                f"available providers: {available}); install onnxruntime-gpu with a matching CUDA/cuDNN or use device='cpu'")
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
            raise WeightsError(f"{path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, got "
                               f"{[i.name for i in inputs]} -> {[o.name for o in outputs]}")
        self.card: dict[str, Any] = card
        self.device = device
        self.precision = precision
        self.path = path
        self.session = session
        self.providers: list[str] = providers
        self.embed_dim = int(card.get("embed_dim") or outputs[0].shape[-1])
        log.info("OnnxEmbedder %s on %s (%s)", card["name"], providers[0], path)

    def embed_batch(self, wav: np.ndarray) -> np.ndarray:
        """(B, T) float32 waveforms at 16 kHz -> (B, D) float32 L2-normalised embeddings.

        T must be at least :data:`MIN_SAMPLES`; other dtypes are cast to float32.
        """
        x = np.asarray(wav)
        if x.ndim != 2:
            raise AudioError(f"<array shape={x.shape} dtype={x.dtype}>: embed_batch expects (batch, samples)")
        if x.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        if x.shape[1] < MIN_SAMPLES:
            raise AudioError(f"<array shape={x.shape} dtype={x.dtype}>: need at least {MIN_SAMPLES} samples "
                             f"({MIN_SAMPLES / SAMPLE_RATE:.2f} s at {SAMPLE_RATE} Hz)")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise AudioError(f"<array shape={x.shape} dtype={x.dtype}>: contains NaN or Inf")
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0].astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"OnnxEmbedder({self.card['name']!r}, precision={self.precision!r}, providers={self.providers})"


# --------------------------------------------------------------------------- command line


def _default_data_root() -> Path:
    env = os.environ.get("NESTSPK_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _parity_clips(data_root: Path, count: int) -> list[np.ndarray]:
    """First ``count`` LibriSpeech snippets (sorted by name) under ``data_root``, loaded at 16 kHz."""
    from .audio import load_audio

    files = sorted((data_root / "librispeech-snippets" / "train-clean-100").glob("*.flac"))[:count]
    return [load_audio(str(f)) for f in files]


def _update_card(card_path: Path, onnx_path: Path, parity: dict | None) -> None:
    """Set onnx_file, onnx_sha256 (and onnx_parity) in the card, leaving every other key as it is."""
    raw = json.loads(card_path.read_text())
    raw["onnx_file"] = os.path.relpath(onnx_path.resolve(), card_path.resolve().parent)
    raw["onnx_sha256"] = sha256_file(onnx_path)
    if parity is not None:
        raw["onnx_parity"] = parity
    elif "onnx_parity" in raw:
        del raw["onnx_parity"]  # stale numbers for another file
    card_path.write_text(json.dumps(raw, indent=1) + "\n")
    log.info("updated %s: onnx_file=%s sha256=%s...", card_path, raw["onnx_file"], raw["onnx_sha256"][:16])


def _export_one(name: str, out: Path | None, args: argparse.Namespace, update: bool) -> dict:
    from .checkpoints import load_model

    card_path = resolve_card(name)
    model, card = load_model(card_path)
    out = out or Path(card["_dir"]) / f"{card['name']}.onnx"
    export_onnx(model, out, opset=args.opset, exporter=args.exporter, frontend_dft=args.frontend_dft)
    parity = None
    if not args.no_parity:
        clips = _parity_clips(Path(args.data), args.clips)
        if clips:
            parity = measure_parity(model, out, clips)
            if parity["cosine_min"] < PARITY_COSINE_MIN:
                raise NestspkError(f"{card['name']}: ONNX parity on real clips too low: {parity}")
        else:
            log.warning("no clips under %s; parity not measured (set --data or NESTSPK_DATA)", args.data)
    if update:
        _update_card(card_path, out, parity)
    result = {"model": card["name"], "onnx": str(out), "bytes": out.stat().st_size,
              "sha256": sha256_file(out), "parity": parity}
    if args.int8:
        result["int8"] = _quantize_one(model, card, card_path, out, args, update)
    return result


def _int8_metrics(card: dict, int8_path: Path, data_root: Path) -> dict:
    """EER/minDCF of the int8 file on the card's dev and test trial lists (those that exist)."""
    import onnxruntime as ort

    from .scoring import evaluate_trials

    sess = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])

    def embed_fn(x: np.ndarray) -> np.ndarray:
        return sess.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]

    metrics = {}
    lists = Path(card["_dir"]) / "lists"
    for split in ("dev", "test"):
        trials = lists / f"{split}_trials.txt"
        if not trials.is_file():
            continue
        r = evaluate_trials(card["name"], trials, root=data_root, embed_fn=embed_fn)
        metrics[split] = {"eer": r["eer"], "min_dcf_0.01": r["min_dcf_0.01"], "min_dcf_0.05": r["min_dcf_0.05"],
                          "trials": f"lists/{trials.name}"}
    return metrics


def _quantize_one(model, card: dict, card_path: Path, fp32_path: Path, args: argparse.Namespace, update: bool) -> dict:
    from .quantize import calibration_crops, quantize_onnx

    data_root = Path(args.data)
    manifest = Path(args.calibration) if args.calibration else Path(card["_dir"]) / "lists" / "train.txt"
    crops = calibration_crops(manifest, data_root, count=args.calibration_files, seconds=8.0, seed=0)
    out = fp32_path.with_name(fp32_path.stem + ".int8.onnx")
    clips = _parity_clips(data_root, args.clips)
    if not clips:
        raise NestspkError(f"int8 export needs real clips to measure parity; none under {data_root} "
                           "(set --data or NESTSPK_DATA)")
    quantize_onnx(fp32_path, out, crops)
    parity = measure_parity(model, out, clips)
    if parity["cosine_min"] < INT8_COSINE_MIN:
        raise NestspkError(f"{card['name']}: int8 embeddings too far from torch fp32 on real clips: {parity}")
    metrics = _int8_metrics(card, out, data_root)
    if update:
        raw = json.loads(card_path.read_text())
        raw["onnx_int8_file"] = os.path.relpath(out.resolve(), card_path.resolve().parent)
        raw["onnx_int8_sha256"] = sha256_file(out)
        raw["onnx_int8_parity"] = parity
        raw["onnx_int8_metrics"] = metrics
        raw["onnx_int8_calibration"] = {"manifest": os.path.relpath(manifest.resolve(), card_path.resolve().parent),
                                        "files": args.calibration_files, "seconds": 8.0, "seed": 0}
        card_path.write_text(json.dumps(raw, indent=1) + "\n")
    return {"onnx": str(out), "bytes": out.stat().st_size, "sha256": sha256_file(out), "parity": parity,
            "metrics": metrics}


def main(argv: Sequence[str] | None = None) -> int:
    """``nestspk-export``: export shipped models to ONNX; exit status 0 on success, 1 with a one-line message on error."""
    p = argparse.ArgumentParser(prog="nestspk-export", description=__doc__.split("\n\n")[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="shipped model name or alias (nested, resnetse34l, ...) or a .json card / .pt path")
    which.add_argument("--all", action="store_true", help="export every shipped model beside its card and update the cards")
    p.add_argument("-o", "--output", help="output .onnx (with --model; default: <card dir>/<name>.onnx)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto")
    p.add_argument("--frontend-dft", choices=("factored", "direct"), default=DEFAULT_FRONTEND_DFT,
                   help="DFT of the exported front end (same spectrum; factored is faster in onnxruntime)")
    p.add_argument("--update-card", action="store_true", help="write onnx_file, onnx_sha256 and onnx_parity into the card")
    p.add_argument("--data", default=str(_default_data_root()), help="data root holding librispeech-snippets/ for parity")
    p.add_argument("--clips", type=int, default=8, help="number of real clips for the parity measurement")
    p.add_argument("--no-parity", action="store_true", help="skip the parity measurement on real clips")
    p.add_argument("--int8", action="store_true",
                   help="also write <name>.int8.onnx (static int8, calibrated on real speech) and measure its "
                        "parity and dev/test EER (with --update-card / --all: stored in the card)")
    p.add_argument("--calibration", default=None, help="speaker-path manifest for int8 calibration "
                                                       "(default: <card dir>/lists/train.txt)")
    p.add_argument("--calibration-files", type=int, default=48, help="files (one 8 s crop each) for int8 calibration")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:
        logging.getLogger("nestspk").setLevel(logging.INFO)
    try:
        if args.all:
            if args.output:
                raise ValueError("-o/--output is not used with --all (files are written beside the cards)")
            from .checkpoints import weights_dir

            names = []
            for c in sorted(weights_dir().glob("*.json")):
                try:
                    read_card(c)
                except WeightsError:
                    continue  # not a model card
                names.append(c.stem)
            results = [_export_one(n, None, args, update=True) for n in names]
        else:
            out = Path(args.output) if args.output else None
            if out is not None and out.suffix != ".onnx":
                raise ValueError(f"output {out} must end in .onnx")
            results = [_export_one(args.model, out, args, update=args.update_card)]
    except (NestspkError, OSError, ValueError, ImportError) as e:
        msg = " ".join(str(e).split())
        print(f"nestspk-export: error: {msg[:500]}", file=sys.stderr)
        return 1
    for r in results:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
