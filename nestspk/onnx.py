"""Former home of the ONNX runtime and export; kept so that old imports keep working.

Running a model: :mod:`nestspk.runtime.onnx_runtime` (numpy + onnxruntime). Exporting and
quantising: :mod:`nestspk.export` (torch, onnx). ``python -m nestspk.onnx`` is ``nestspk-export``.
"""
from __future__ import annotations

import sys

from .runtime.onnx_runtime import INPUT_NAME, MIN_SAMPLES, OUTPUT_NAME, OnnxBackendError, OnnxEmbedder, make_session

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "MIN_SAMPLES", "OnnxBackendError", "OnnxEmbedder", "make_session", "main"]


def main(argv=None) -> int:
    """``nestspk-export`` (see :func:`nestspk.export.main`)."""
    from .export import main as export_main

    return export_main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
