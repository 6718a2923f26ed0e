"""``nestspk`` command line: verify two recordings, embed many, evaluate a trial list.

    nestspk verify a.wav b.wav [--model nested] [--backend torch|onnx] [--device auto] [--json]
    nestspk embed FILE_OR_DIR ... -o embeddings.npy [--resume]
    nestspk eval --trials weights/lists/test_trials.txt [--root DIR] [--score-norm asnorm] [--report-dir DIR]

Exit status: 0 on success, 2 on bad input (one-line message on stderr), 1 on other errors.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from .errors import NestspkError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="nested", help="shipped model name or path to a model card (.json)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--score-norm", default=None, choices=["asnorm"], help="score normalisation")
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                   help="int8: the quantised ONNX model (needs --backend onnx)")


def _threshold(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _verifier(a: argparse.Namespace, threshold: float | None = None):
    from .verifier import Verifier

    return Verifier(a.model, device=a.device, backend=a.backend, threshold=threshold, score_norm=a.score_norm,
                    precision=a.precision)


def _expand(inputs: list[str]) -> list[str]:
    files: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
        else:
            files.append(item)
    return files


def cmd_verify(a: argparse.Namespace) -> int:
    v = _verifier(a, a.threshold)
    r = v.verify(a.audio_a, a.audio_b)
    if a.json:
        print(json.dumps({"score": r.score, "same_speaker": r.same_speaker, "threshold": r.threshold, "llr": r.llr,
                          "model": v.model_name}))
    else:
        verdict = "same speaker" if r.same_speaker else "different speakers"
        op = ">=" if r.same_speaker else "<"
        print(f"{verdict}: score {r.score:.3f} {op} threshold {r.threshold:.3f} ({v.model_name})")
    return 0


def cmd_embed(a: argparse.Namespace) -> int:
    """Embeds files in chunks, saving after each chunk so ``--resume`` can continue an interrupted run."""
    from tqdm import tqdm

    files = _expand(a.inputs)
    if not files:
        raise NestspkError("no audio files found in the given inputs")
    out = Path(a.output)
    side = out.with_name(out.name + ".json")
    done: dict[str, int] = {}
    embs: list[np.ndarray] = []
    failed: dict[str, str] = {}
    if a.resume and out.exists() and side.exists():
        meta = json.loads(side.read_text())
        prev = np.load(out, allow_pickle=False)
        done = {f: i for i, f in enumerate(meta["files"])}
        if len(prev) < len(done):
            raise NestspkError(f"{out}: has {len(prev)} rows but {side} lists {len(done)} files; cannot resume")
        # rows past the file list were saved by a run stopped between writing the .npy and the .json
        embs = list(prev[:len(done)])
        failed = meta.get("failed", {})
    v = _verifier(a)
    todo = [f for f in files if f not in done and f not in failed]

    def save() -> None:
        names = list(done)
        arr = np.stack(embs) if embs else np.zeros((0, v.embed_dim), np.float32)
        tmp = out.with_name(out.name + ".tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, out)
        tmp_side = side.with_name(side.name + ".tmp")
        tmp_side.write_text(json.dumps({"model": v.model_name, "files": names, "failed": failed}, indent=1))
        os.replace(tmp_side, side)

    chunk = max(1, a.batch_size)
    if a.workers > 0:  # pipelined: decoding in worker processes overlapped with model batches (nestspk.pipeline)
        from .pipeline import embed_files

        with tqdm(total=len(todo), unit="file", disable=a.quiet) as bar:
            for k, (f, e, err) in enumerate(embed_files(v, todo, workers=a.workers, batch_size=a.batch_size)):
                if err is None:
                    done[f] = len(embs)
                    embs.append(e)
                else:
                    failed[f] = err
                bar.update(1)
                if (k + 1) % chunk == 0:
                    save()
        todo = []
    with tqdm(total=len(todo), unit="file", disable=a.quiet or not todo) as bar:
        for k in range(0, len(todo), chunk):
            part = todo[k:k + chunk]
            try:
                got = v.embed_batch(part, batch_size=a.batch_size)
                for f, e in zip(part, got):
                    done[f] = len(embs)
                    embs.append(e)
            except NestspkError:  # find the bad file(s) one by one, keep the good ones
                for f in part:
                    try:
                        e = v.embed(f)
                    except NestspkError as err:
                        failed[f] = str(err)
                        continue
                    done[f] = len(embs)
                    embs.append(e)
            bar.update(len(part))
            save()
    save()
    print(f"wrote {len(done)} embeddings ({v.embed_dim}-d) to {out}; file list in {side}")
    if failed:
        print(f"{len(failed)} file(s) failed:", file=sys.stderr)
        for f, err in failed.items():
            print(f"  {err}", file=sys.stderr)
        return 2 if not done else 0
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from .metrics import compute_eer, compute_min_dcf
    from .corpus import default_data_root, load_segment, read_trials

    trials = read_trials(a.trials)
    root = Path(a.root) if a.root else default_data_root()
    v = _verifier(a)
    specs = sorted({s for _, x, y in trials for s in (x, y)})
    index = {s: i for i, s in enumerate(specs)}
    from tqdm import tqdm

    wavs = [load_segment(s, root) for s in tqdm(specs, desc="loading", unit="seg", disable=a.quiet)]
    emb = v.embed_batch(wavs, batch_size=a.batch_size)
    ia = np.array([index[x] for _, x, _ in trials])
    ib = np.array([index[y] for _, _, y in trials])
    labels = np.array([t[0] for t in trials])
    scores = v.score_embeddings(emb[ia], emb[ib])
    eer, thr = compute_eer(scores, labels)
    res = {"model": v.model_name, "trials": str(a.trials), "n_trials": len(trials), "n_target": int(labels.sum()),
           "score_norm": a.score_norm or "none", "eer": eer, "eer_threshold": thr,
           "min_dcf_0.01": compute_min_dcf(scores, labels, 0.01)[0], "min_dcf_0.05": compute_min_dcf(scores, labels, 0.05)[0]}
    if a.report_dir:
        from .report import write_report

        res["report"] = write_report(scores, labels, a.report_dir, v.threshold, v.model_name)
    print(f"{v.model_name} on {a.trials}: EER {100 * eer:.2f}%  minDCF(0.01) {res['min_dcf_0.01']:.3f}  "
          f"minDCF(0.05) {res['min_dcf_0.05']:.3f}  ({len(trials)} trials, {res['n_target']} target, "
          f"score norm: {res['score_norm']})")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1, default=float))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nestspk", description="Speaker verification (nested encoder).")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    pv = sub.add_parser("verify", help="are two recordings the same speaker?")
    pv.add_argument("audio_a")
    pv.add_argument("audio_b")
    pv.add_argument("--threshold", type=_threshold, default=None,
                    help="a score, or an operating point from the card: eer (default), far_0.01, far_0.001")
    pv.add_argument("--json", action="store_true")
    _add_model_args(pv)
    pv.set_defaults(func=cmd_verify)
    pe = sub.add_parser("embed", help="embed files (or directories of audio) into an .npy matrix")
    pe.add_argument("inputs", nargs="+")
    pe.add_argument("-o", "--output", required=True)
    pe.add_argument("--batch-size", type=int, default=32)
    pe.add_argument("--resume", action="store_true", help="continue an interrupted run into the same output")
    pe.add_argument("--workers", type=int, default=0,
                    help="decode files in N worker processes, overlapped with the model (0: no pipelining)")
    pe.add_argument("--quiet", action="store_true")
    _add_model_args(pe)
    pe.set_defaults(func=cmd_embed)
    pt = sub.add_parser("eval", help="EER/minDCF on a VoxCeleb-style trial list (label path1 path2)")
    pt.add_argument("--trials", required=True)
    pt.add_argument("--root", default=None, help="folder the trial paths are relative to (default $NESTSPK_DATA or ../shared/data)")
    pt.add_argument("--batch-size", type=int, default=32)
    pt.add_argument("--report-dir", default=None, help="write report.json, det.png, hist.png here")
    pt.add_argument("--json", default=None, help="write the figures as JSON to this file")
    pt.add_argument("--quiet", action="store_true")
    _add_model_args(pt)
    pt.set_defaults(func=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return a.func(a)
    except (NestspkError, FileNotFoundError, ValueError) as e:
        print(f"nestspk: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
