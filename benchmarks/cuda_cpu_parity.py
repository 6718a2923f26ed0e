"""How close are CUDA embeddings to CPU ones? ``Verifier(device="cuda")`` (CUDA-graph path) vs ``device="cpu"``.

    NESTSPK_DATA=... python benchmarks/cuda_cpu_parity.py --clips 16 --seconds 3,8

For each shipped model, embeds the first ``--clips`` LibriSpeech snippets (sorted by name) cropped to
each of ``--seconds``, on CPU (float32 reference) and on CUDA: with torch's defaults (cuDNN
convolutions may use TF32; matmuls full fp32) and with ``torch.backends.cudnn.allow_tf32 = False``.
Prints min / median cosine and the max |difference| of the normalised log-mel features, as a markdown
table. The Verifier's CUDA fast path is meant to be exact within 1e-4 cosine of CPU.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from nestspk import Verifier


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--seconds", default="3,8")
    p.add_argument("--models", default="nested,resnetse34l")
    args = p.parse_args()
    root = Path(os.environ.get("NESTSPK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    files = sorted((root / "librispeech-snippets" / "train-clean-100").glob("*.flac"))[:args.clips]
    if not files:
        raise SystemExit(f"no LibriSpeech snippets under {root}")
    audio = [sf.read(f, dtype="float32")[0] for f in files]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"{len(files)} clips from {root.name}/librispeech-snippets")
    print("| model | seconds | cuDNN TF32 | cosine min | cosine median | max abs diff of features |")
    print("|---|---:|---|---:|---:|---:|")
    for name in args.models.split(","):
        cpu = Verifier(name, device="cpu", backend="torch")
        for seconds in [float(s) for s in args.seconds.split(",")]:
            n = int(seconds * 16000)
            wavs = np.stack([np.resize(a, n) for a in audio])  # short clips repeat, as np.resize does
            ref = cpu.embed_batch(list(wavs), sample_rate=16000)
            with torch.inference_mode():
                feats_ref = cpu.embedder.model.frontend(torch.from_numpy(wavs))
            for tf32 in (True, False):
                torch.backends.cudnn.allow_tf32 = tf32
                gpu = Verifier(name, device="cuda")
                for _ in range(3):  # eager, capture, replay
                    out = gpu.embed_batch(list(wavs), sample_rate=16000)
                with torch.inference_mode():
                    feats = gpu.embedder.model.frontend(torch.from_numpy(wavs).cuda()).cpu()
                cos = np.sum(out * ref, axis=1)
                print(f"| {name} | {seconds:g} | {'on' if tf32 else 'off'} | {cos.min():.7f} | "
                      f"{np.median(cos):.7f} | {(feats - feats_ref).abs().max().item():.1e} |")
    torch.backends.cudnn.allow_tf32 = True


if __name__ == "__main__":
    main()
