"""Int8 ONNX variant for CPU inference: static, per-channel weights, QDQ format.

The fp32 export (:func:`nestspk.export.export_onnx`) stays the reference. This module
derives ``<name>.int8.onnx`` from it:

1. ``ReduceMean`` over (H, W) with ``keepdims=1`` (the squeeze-excitation average)
   is rewritten as the equivalent ``GlobalAveragePool``, which has an int8 kernel.
2. onnxruntime's static quantiser inserts QuantizeLinear/DequantizeLinear pairs
   around the convolutions, residual adds, SE products and SE averages of the
   encoder's stages 3 and 4 (int8 weights per output channel, uint8 activations with
   min/max ranges calibrated on real speech crops). onnxruntime then runs them as
   QLinearConv/QLinearAdd/... kernels (VNNI/AMX on recent x86 CPUs).
3. The stem and the first two stages stay fp32: their 1- to 32-channel maps at high time
   resolution run in int8 as channels-last QLinearConv with transposes and
   quantise/dequantise passes that cost about what the int8 arithmetic saves, and add most
   of the error (``benchmarks/results/2026-12-04_int8_scopes/``: 0.95x the time of quantising
   every stage on an 8 s clip; worst cosine to fp32 on 24 held-out clips 0.9997 instead
   of 0.987). Everything that sets the scale of the
   result stays fp32 too: the front end (DFT conv, log, instance norm), the SE gate
   convolutions, the nested paths (pooling, concat, GroupNorm), the fusion conv,
   attentive statistics pooling, the fc layer and the L2 normalisation.

The int8 file is an approximation: its cosine to the fp32 embeddings and its EER on
the trial lists are measured and stored in the model card (``onnx_int8_*`` keys) by
``nestspk-export --int8``. Needs ``onnx`` and ``onnxruntime`` (no torch).
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

import numpy as np

from .errors import NestspkError

log = logging.getLogger(__name__)

__all__ = ["QUANTIZED_OPS", "ENCODER_SCOPES", "rewrite_se_means", "quantize_onnx", "calibration_crops"]

QUANTIZED_OPS = ("Conv", "Mul", "Add", "GlobalAveragePool")
"""ONNX op types that may be quantised (only inside :data:`ENCODER_SCOPES`)."""
ENCODER_SCOPES = ("encoder.levels.2", "encoder.levels.3", "encoder.layers.2", "encoder.layers.3")
"""torch module scopes (from the exporter's ``pkg.torch.onnx.name_scopes``) whose nodes are quantised: stages 3 and 4
of the nested encoder (``levels``) and of ResNetSE34L (``layers``), where the 64- and 128-channel convolutions hold
most of the arithmetic; not the stem nor stages 1-2."""
_SCOPE_KEY = "pkg.torch.onnx.name_scopes"


def _scope(node) -> str:
    for prop in node.metadata_props:
        if prop.key == _SCOPE_KEY:
            return prop.value
    return ""


def rewrite_se_means(model) -> int:
    """In place: ``ReduceMean(x, axes=[2, 3] or [-2, -1], keepdims=1)`` on 4-D x -> ``GlobalAveragePool(x)``.

    Same result (mean over the spatial axes, shape (B, C, 1, 1)). Returns the number of nodes rewritten.
    """
    import onnx
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    count = 0
    for i, node in enumerate(model.graph.node):
        if node.op_type != "ReduceMean" or len(node.input) != 2 or node.input[1] not in consts:
            continue
        keepdims = [a.i for a in node.attribute if a.name == "keepdims"]
        if keepdims not in ([], [1]) or any(a.name == "noop_with_empty_axes" and a.i for a in node.attribute):
            continue
        axes = sorted(int(a) for a in np.asarray(consts[node.input[1]]).reshape(-1))
        if axes not in ([2, 3], [-2, -1]):
            continue
        gap = onnx.helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name + "_gap")
        gap.metadata_props.extend(node.metadata_props)
        model.graph.node[i].CopyFrom(gap)
        count += 1
    return count


class _DropPreprocessHint(logging.Filter):
    """onnxruntime's quantiser logs "Please consider (to run) pre-processing" on the root logger at every call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Quantise without onnxruntime's pre-processing hint and its C++ 'Removing initializer' warnings."""
    import onnxruntime as ort

    hint = _DropPreprocessHint()
    root = logging.getLogger()
    root.addFilter(hint)
    ort.set_default_logger_severity(3)  # errors only (onnxruntime has no getter to restore; 2 is its default)
    try:
        yield
    finally:
        root.removeFilter(hint)
        ort.set_default_logger_severity(2)


class _Crops:
    """onnxruntime CalibrationDataReader over a list of (T,) float32 waveforms."""

    def __init__(self, crops: Sequence[np.ndarray], input_name: str):
        self._it = iter(crops)
        self._name = input_name

    def get_next(self):
        wav = next(self._it, None)
        return None if wav is None else {self._name: np.asarray(wav, dtype=np.float32)[None]}


def quantize_onnx(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                  calibration: Iterable[np.ndarray], ops: Sequence[str] = QUANTIZED_OPS,
                  scopes: Sequence[str] = ENCODER_SCOPES) -> Path:
    """Write the int8 (QDQ, per-channel) variant of ``fp32_path`` to ``out_path``; returns ``out_path``.

    ``calibration``: real 16 kHz waveforms (T,) float32 used to fix the activation ranges
    (a few dozen 8 s crops of training speech; see :func:`calibration_crops`). ``ops`` and ``scopes``: which
    nodes are quantised (defaults :data:`QUANTIZED_OPS`, :data:`ENCODER_SCOPES`; other values are for
    ``benchmarks/int8_scopes_probe.py``). The SE gate convolutions are never quantised.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from .runtime.onnx_runtime import INPUT_NAME

    crops = [np.asarray(c, dtype=np.float32) for c in calibration]
    if not crops:
        raise NestspkError(f"{fp32_path}: no calibration audio given for int8 quantisation")
    model = onnx.load(str(fp32_path))
    rewritten = rewrite_se_means(model)
    nodes = [n.name for n in model.graph.node
             if n.op_type in ops and any(s in _scope(n) for s in scopes)
             and not (n.op_type == "Conv" and ".se." in _scope(n))]
    if not nodes:
        raise NestspkError(f"{fp32_path}: found no encoder nodes to quantise (is it a nestspk export?)")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, _quiet_quantizer():
        src = Path(tmp) / "prepared.onnx"
        onnx.save_model(model, str(src), save_as_external_data=False)
        quantize_static(
            str(src), str(out_path), _Crops(crops, INPUT_NAME),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=list(ops), nodes_to_quantize=nodes,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    onnx.checker.check_model(str(out_path))
    log.info("int8: %s -> %s (%d SE means rewritten, %d nodes quantised, %d calibration crops)",
             fp32_path, out_path, rewritten, len(nodes), len(crops))
    return out_path


def calibration_crops(manifest: "str | os.PathLike | Sequence[tuple[str, str]]", root: str | os.PathLike,
                      count: int = 48, seconds: float = 8.0, seed: int = 0) -> list[np.ndarray]:
    """``count`` crops of ``seconds`` from the first ``count`` files of a ``speaker path`` list (path or rows).

    Crop offsets are drawn from ``numpy.random.default_rng(seed)``, so the same
    list, root and seed give the same crops. Files shorter than ``seconds`` are used whole.
    """
    from .audio import TARGET_SAMPLE_RATE, load_audio
    from .corpus import read_train_list

    rows = read_train_list(manifest) if isinstance(manifest, (str, os.PathLike)) else list(manifest)
    if not rows:
        raise NestspkError(f"{manifest}: empty manifest")
    rng = np.random.default_rng(seed)
    n = int(seconds * TARGET_SAMPLE_RATE)
    crops = []
    for _, rel in rows[:count]:
        wav = load_audio(str(Path(root) / rel))
        start = int(rng.integers(0, max(1, len(wav) - n + 1)))
        crops.append(wav[start:start + n])
    return crops
