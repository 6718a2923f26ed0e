"""``nestspk`` command line: verify two recordings, embed many, evaluate a trial list.

    nestspk verify a.wav b.wav [--model nested] [--backend torch|onnx] [--device auto] [--json]
    nestspk embed FILE_OR_DIR ... -o embeddings.npy [--resume] [--force]
    nestspk eval --trials weights/lists/test_trials.txt [--root DIR] [--score-norm asnorm] [--report-dir DIR]

Exit status: 0 on success, 2 on bad input or arguments (one line on stderr, or one JSON object on
stdout with ``verify --json``), 130 when interrupted, 1 on internal errors.

``embed`` writes ``OUT`` (an ``(N, D)`` float32 ``.npy``) and ``OUT.json`` (model, file list, failures),
both atomically. It never overwrites one of its inputs, and overwrites an existing ``OUT`` only when
that is an embeddings file written by ``nestspk embed`` (or with ``--force``). Inputs named twice
are embedded once (a note says so), so rows and names stay aligned.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .errors import InputError, NestspkError

EMBEDDINGS_FORMAT = "nestspk-embeddings/1"
OPERATING_POINTS = ("eer", "far_0.01", "far_0.001")
SAVE_EVERY_S = 30
"""``nestspk embed --save-every`` default: seconds between the saves of a running embed."""
log = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    from . import __version__

    return __version__


def _add_model_args(p: argparse.ArgumentParser, score_norm: bool) -> None:
    p.add_argument("--model", default="nested", help="shipped model name (nested, resnetse34l) or a model card .json")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                   help="runtime: auto (default: onnxruntime on CPU, torch on CUDA), torch or onnx")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    if score_norm:
        p.add_argument("--score-norm", default=None, choices=["asnorm"],
                       help="score normalisation: asnorm (adaptive s-norm with the shipped cohort)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                   help="fp32, or int8: the quantised ONNX model (needs --backend onnx)")
    p.add_argument("--vad", action="store_true", help="embed only the speech found by Silero VAD (extra 'vad')")


def _threshold(text: str) -> float | str:
    """argparse type: a finite number or an operating-point name."""
    if text in OPERATING_POINTS:
        return text
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is neither a number nor an operating point ({', '.join(OPERATING_POINTS)})") from None
    if not math.isfinite(t):
        raise argparse.ArgumentTypeError(f"threshold must be finite, got {text[:40]!r}")
    return t


def _int_at_least(lo: int, what: str):
    """argparse type: an int >= ``lo``."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text[:40]!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v
    return parse


_positive = _int_at_least(1, "a positive integer")


def _bucket_seconds(text: str) -> float:
    """argparse type for --bucket-s: seconds in [0.01, 60]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text[:40]!r}") from None
    if not 0.01 <= v <= 60:  # also rejects nan
        raise argparse.ArgumentTypeError(f"expected seconds between 0.01 and 60, got {text[:40]}")
    return v
_nonnegative = _int_at_least(0, "a whole number >= 0")


def _verifier(a: argparse.Namespace, threshold: float | str | None = None):
    from .verifier import Verifier

    return Verifier(a.model, device=a.device, backend=a.backend, threshold=threshold,
                    score_norm=getattr(a, "score_norm", None), precision=a.precision, vad=a.vad)


def _expand(inputs: list[str]) -> list[str]:
    """Files of ``inputs`` (directories searched for every format soundfile reads), in order, duplicates dropped."""
    from .audio import AUDIO_SUFFIXES

    files: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file())
            if not found:
                log.warning("%s: no audio files in this directory", _label(item))
            files += found
        elif p.exists():
            files.append(item)
        else:
            raise InputError(f"{_label(item)}: no such file or directory")
    unique = list(dict.fromkeys(files))
    if len(unique) < len(files):
        print(f"note: {len(files) - len(unique)} input(s) named more than once; each is embedded once",
              file=sys.stderr)
    return unique


def _label(path: Any) -> str:
    from .audio import describe_input

    return describe_input(str(path))


def cmd_verify(a: argparse.Namespace) -> int:
    if isinstance(a.threshold, float) and a.score_norm is None and not -1.0 <= a.threshold <= 1.0:
        raise InputError(f"--threshold {a.threshold} is outside [-1, 1], the range of cosine scores")
    v = _verifier(a, a.threshold)
    r = v.verify(a.audio_a, a.audio_b)
    if a.json:
        print(json.dumps({"score": r.score, "same_speaker": r.same_speaker, "threshold": r.threshold, "llr": r.llr,
                          "model": v.model_name}, allow_nan=False))
    else:
        verdict = "same speaker" if r.same_speaker else "different speakers"
        op = ">=" if r.same_speaker else "<"
        print(f"{verdict}: score {r.score:.3f} {op} threshold {r.threshold:.3f} ({v.model_name})")
    return 0


# --------------------------------------------------------------------------- embed


def _rows_digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr, dtype=np.float32).tobytes()).hexdigest()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _read_sidecar(side: Path) -> dict:
    """The sidecar JSON of an embeddings file, checked for shape; InputError naming it otherwise."""
    try:
        meta = json.loads(side.read_text(encoding="utf-8", errors="surrogateescape"))
    except (OSError, ValueError, RecursionError) as e:
        raise InputError(f"{side}: not a nestspk embeddings sidecar ({type(e).__name__}: {str(e)[:120]})") from e
    ok = (isinstance(meta, dict) and isinstance(meta.get("model"), str) and isinstance(meta.get("files"), list)
          and all(isinstance(f, str) for f in meta["files"]) and len(set(meta["files"])) == len(meta["files"])
          and isinstance(meta.get("failed", {}), dict)
          and all(isinstance(k, str) and isinstance(x, str) for k, x in meta.get("failed", {}).items()))
    if not ok:
        raise InputError(f"{side}: malformed nestspk embeddings sidecar (needs 'model', unique 'files' and 'failed')")
    return meta


def _is_ours(out: Path, side: Path) -> bool:
    """True when ``out`` + ``side`` look like a pair written by ``nestspk embed``."""
    if not (out.is_file() and side.is_file()):
        return False
    try:
        _read_sidecar(side)
        with open(out, "rb") as f:
            np.lib.format.read_magic(f)
    except (InputError, OSError, ValueError):
        return False
    return True


def _check_output(out: Path, side: Path, files: list[str], force: bool) -> None:
    """Refuse, before any work, an output that cannot be written or would destroy something."""
    if out.is_dir():
        raise InputError(f"-o {_label(out)}: is a directory; give a file name such as {_label(out / 'embeddings.npy')}")
    parent = out.parent
    up = parent
    while not up.exists() and up != up.parent:
        up = up.parent
    if up.exists() and not up.is_dir():
        raise InputError(f"-o {_label(out)}: {_label(up)} is a regular file, not a directory")
    if not parent.is_dir():
        raise InputError(f"-o {_label(out)}: output directory {_label(parent)} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"-o {_label(out)}: cannot write to directory {_label(parent)}")
    for f in files:
        for target in (out, side):
            if _same_file(Path(f), target):
                raise InputError(f"-o {_label(out)}: would overwrite the input {_label(f)}")
    if force or _is_ours(out, side):
        return
    for target in (out, side):
        if target.exists():
            raise InputError(f"-o {_label(out)}: {_label(target)} exists and is not a nestspk embeddings file;"
                             " choose another name or pass --force to overwrite it")


def _resume_state(out: Path, side: Path, model: str, dim: int) -> tuple[dict[str, int], list[np.ndarray], dict]:
    try:
        meta = _read_sidecar(side)
    except InputError as e:
        raise InputError(f"{e}; cannot resume") from e
    if meta["model"] != model:
        raise InputError(f"{side}: embeddings were made with model {meta['model'][:80]!r}; this run uses {model!r}."
                         " Resume with the same --model, or write to another -o")
    try:
        prev = np.load(out, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{out}: not a readable .npy file ({type(e).__name__}: {str(e)[:120]}); cannot resume") from e
    files = meta["files"]
    if prev.ndim != 2 or prev.shape[1] != dim or prev.dtype != np.float32:
        raise InputError(f"{out}: holds {prev.dtype} {prev.shape}, expected float32 (N, {dim}); cannot resume")
    if len(prev) < len(files):
        raise InputError(f"{out}: has {len(prev)} rows but {side} lists {len(files)} files; cannot resume")
    # rows past the file list were saved by a run stopped between writing the .npy and the .json
    rows = prev[:len(files)]
    digest = meta.get("rows_sha256")
    if digest is not None and digest != _rows_digest(rows):
        raise InputError(f"{out}: its rows do not match the checksum in {side} (changed since it was written);"
                         " cannot resume")
    if not np.isfinite(rows).all():
        raise InputError(f"{out}: holds non-finite rows; cannot resume")
    return {f: i for i, f in enumerate(files)}, list(rows), dict(meta.get("failed", {}))


def cmd_embed(a: argparse.Namespace) -> int:
    """Embeds files in chunks, saving after each chunk so ``--resume`` can continue an interrupted run."""
    from tqdm import tqdm

    from .fileio import atomic_write

    files = _expand(a.inputs)
    if not files:
        raise InputError("no audio files found in the given inputs")
    if a.vad and (a.workers > 0 or a.bucket_s):
        raise InputError("--vad does not work with --workers or --bucket-s yet (the pipeline decodes without the "
                         "VAD); drop one")
    if a.ray and a.bucket_s:
        raise InputError("--bucket-s does not work with --ray (Ray Data batches by its own rules); drop one")
    if a.ray:  # Ray Data: Parquet files in the folder a.output (nestspk.ray_embed)
        from .ray_embed import cli_embed

        s = cli_embed(files, a.output, a.ray, a.model, a.backend, a.device, a.precision, a.vad, a.batch_size,
                      a.resume, a.ray_actors, a.ray_gpus_per_actor)
        print(f"wrote {s['rows']} rows ({s['errors']} errors) to {s['output']}; {s['skipped']} already there")
        return 2 if s["errors"] and not s["embedded"] else 0
    out = Path(a.output)
    side = out.with_name(out.name + ".json")
    resuming = a.resume and out.exists() and side.exists()
    _check_output(out, side, files, a.force or resuming)  # resuming: _resume_state validates the pair below
    if a.resume and not resuming:
        print(f"note: nothing to resume at {_label(out)}; starting afresh", file=sys.stderr)
    v = _verifier(a)
    done: dict[str, int] = {}
    embs: list[np.ndarray] = []
    failed: dict[str, str] = {}
    if resuming:
        done, embs, failed = _resume_state(out, side, v.model_name, v.embed_dim)
        meta = _read_sidecar(side)
        if meta.get("vad", False) != a.vad:
            raise InputError(f"{side}: written with vad={not a.vad}; resume with the same --vad setting")
        if meta.get("bucket_s") != a.bucket_s:
            raise InputError(f"{side}: written with --bucket-s {meta.get('bucket_s')}; resume with the same "
                             "--bucket-s setting (embeddings of cropped and whole files do not mix)")
    todo = [f for f in files if f not in done and f not in failed]

    def save() -> None:
        arr = np.stack(embs).astype(np.float32) if embs else np.zeros((0, v.embed_dim), np.float32)
        meta = {"format": EMBEDDINGS_FORMAT, "model": v.model_name, "embed_dim": v.embed_dim, "vad": a.vad,
                "bucket_s": a.bucket_s, "files": list(done), "failed": failed, "rows_sha256": _rows_digest(arr)}
        try:
            with atomic_write(out) as f:
                np.save(f, arr)
            with atomic_write(side) as f:
                f.write(json.dumps(meta, indent=1).encode())
        except OSError as e:
            raise NestspkError(f"{_label(out)}: cannot write the embeddings ({e.strerror or e})") from e

    chunk = max(1, a.batch_size)
    last_save = time.monotonic()

    def checkpoint() -> None:
        """Save if --save-every seconds have passed since the last save: each save rewrites the whole .npy, so
        saving after every batch would make a long run's writes grow with the square of its length."""
        nonlocal last_save
        if time.monotonic() - last_save >= a.save_every:
            save()
            last_save = time.monotonic()

    try:
        if a.workers > 0 or a.bucket_s:  # pipelined: decoding in worker processes overlapped with model batches
            from .pipeline import embed_files

            with tqdm(total=len(todo), unit="file", disable=a.quiet) as bar:
                for k, (f, e, err) in enumerate(embed_files(v, todo, workers=a.workers, batch_size=a.batch_size,
                                                            bucket_s=a.bucket_s)):
                    if err is None:
                        done[f] = len(embs)
                        embs.append(e)
                    else:
                        failed[f] = err
                    bar.update(1)
                    if (k + 1) % chunk == 0:
                        checkpoint()
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
                checkpoint()
    except KeyboardInterrupt:
        save()
        print(f"nestspk: interrupted: {len(done)} of {len(files)} embeddings saved in {_label(out)}; run the same"
              " command with --resume to continue", file=sys.stderr)
        return 130
    save()
    print(f"wrote {len(done)} embeddings ({v.embed_dim}-d) to {_label(out)}; file list in {_label(side)}")
    if failed:
        print(f"{len(failed)} file(s) failed:", file=sys.stderr)
        for err in failed.values():
            print(f"  {err}", file=sys.stderr)
        return 2 if not done else 0
    return 0


# --------------------------------------------------------------------------- eval


def _read_trials(path: str) -> list[tuple[int, str, str]]:
    """Trial list rows; InputError naming the file (and line) for anything malformed or empty."""
    from .corpus import read_trials, split_segment
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{_label(p)}: trial list not found")
    try:
        trials = read_trials(p)
    except NestspkError:
        raise
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise InputError(f"{_label(p)}: {e}" if str(p) not in str(e) else str(e)) from e
    if not trials:
        raise InputError(f"{_label(p)}: no trials (only blank or comment lines)")
    for i, (_, x, y) in enumerate(trials, 1):
        for spec in (x, y):
            try:
                _, start, end = split_segment(spec)
                if start is not None and not 0 <= start < end:
                    raise ValueError("need 0 <= START < END")
            except ValueError as e:
                raise InputError(f"{_label(p)}: trial {i}: bad segment {spec[:80]!r} ({e})") from e
    return trials


def cmd_eval(a: argparse.Namespace) -> int:
    from .evaluation import score_trials

    v = _verifier(a)
    trials = a.trials if a.trials else v.card.list_path("test")
    if a.trials and Path(a.trials).is_file():
        _read_trials(a.trials)  # malformed lines, and lists without both labels, fail before any embedding
    res = score_trials(v.embedder, trials, a.root, cohort=v._cohort, batch_size=a.batch_size)
    figures = res.metrics()
    out = {"model": v.model_name, "trials": res.trials, "backend": v.backend, "device": v.device,
           "precision": v.precision} | figures
    if a.report_dir:
        from .report import write_report

        out["report"] = write_report(res.scores, res.labels, a.report_dir, v.threshold, v.model_name)
    skipped = f", {figures['n_skipped']} skipped" if figures["n_skipped"] else ""
    print(f"{v.model_name} on {res.trials}: EER {100 * figures['eer']:.2f}%  minDCF(0.01) {figures['min_dcf_0.01']:.3f}  "
          f"minDCF(0.05) {figures['min_dcf_0.05']:.3f}  ({figures['n_kept']} trials{skipped}, {figures['n_target']} target, "
          f"score norm: {figures['score_norm']})")
    if a.json:
        from .fileio import atomic_write

        with atomic_write(a.json) as f:
            f.write(json.dumps(out, indent=1, default=float).encode())
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nestspk", description="Speaker verification (nested encoder).")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details (INFO level)")
    p.add_argument("--version", action="version", version=f"nestspk {_version()}", help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="{verify,embed,eval}")
    pv = sub.add_parser("verify", help="are two recordings the same speaker?",
                        description="Are two recordings the same speaker? Prints the decision and the score.")
    pv.add_argument("audio_a", help="first recording (any format soundfile reads)")
    pv.add_argument("audio_b", help="second recording")
    pv.add_argument("--threshold", type=_threshold, default=None,
                    help="a score (finite; within [-1, 1] for raw cosine), or an operating point from the card: "
                         "eer (default), far_0.01, far_0.001")
    pv.add_argument("--json", action="store_true", help="print the result (or an error) as one JSON object")
    _add_model_args(pv, score_norm=True)
    pv.set_defaults(func=cmd_verify)
    pe = sub.add_parser("embed", help="embed files (or directories of audio) into an .npy matrix",
                        description="Embed files (directories are searched for every format soundfile reads) into "
                                    "an (N, D) .npy matrix with a .json file list beside it.")
    pe.add_argument("inputs", nargs="+", help="audio files and/or directories")
    pe.add_argument("-o", "--output", required=True,
                    help="output .npy (the file list goes to OUTPUT.json); an existing file is replaced only if "
                         "nestspk embed wrote it")
    pe.add_argument("--batch-size", type=_positive, default=32, help="files per forward pass (default 32)")
    pe.add_argument("--save-every", type=_nonnegative, default=SAVE_EVERY_S, metavar="SECONDS",
                    help="save the output at most this often while embedding, for --resume after a crash (default "
                         "%(default)s; 0: after every batch). Each save rewrites the whole .npy; the end of the run "
                         "and Ctrl-C always save")
    pe.add_argument("--resume", action="store_true",
                    help="continue an interrupted run into the same output (same --model required)")
    pe.add_argument("--force", action="store_true",
                    help="overwrite OUTPUT even if it is not a nestspk embeddings file (never one of the inputs)")
    pe.add_argument("--workers", type=_nonnegative, default=0,
                    help="decode files in N worker processes, overlapped with the model (default 0: no pipelining)")
    pe.add_argument("--bucket-s", type=_bucket_seconds, default=None, metavar="SECONDS",
                    help="crop each file (or 10 s window) to a multiple of SECONDS, centred, so that files of "
                         "different lengths share model batches: faster on a GPU, drops up to SECONDS per file "
                         "(default: exact lengths, the same embeddings as nestspk verify)")
    pe.add_argument("--quiet", action="store_true", help="no progress bar")
    pe.add_argument("--ray", metavar="ADDRESS", default=None,
                    help="embed on Ray Data ('local', 'auto' or ray://HOST:PORT; extra 'ray'): -o is a Parquet folder")
    pe.add_argument("--ray-actors", type=_positive, default=None, help="embedding actors (default: GPUs, else 1)")
    pe.add_argument("--ray-gpus-per-actor", type=float, default=None, help="GPUs per actor (default 1 if any)")
    _add_model_args(pe, score_norm=False)
    pe.set_defaults(func=cmd_embed)
    pt = sub.add_parser("eval", help="EER/minDCF on a VoxCeleb-style trial list (label path1 path2)",
                        description="EER and minDCF of a trial list (lines 'label path1 path2', label 1 = same "
                                    "speaker; paths may be 'file@START-END' segments in seconds).")
    pt.add_argument("--trials", default=None,
                    help="trial list (default: the model card's test list; a relative path not found here is "
                         "looked up beside the card, e.g. lists/dev_trials.txt)")
    pt.add_argument("--root", default=None,
                    help="folder the trial paths are relative to (default $NESTSPK_DATA or ../shared/data)")
    pt.add_argument("--batch-size", type=_positive, default=32, help="segments per forward pass (default 32)")
    pt.add_argument("--report-dir", default=None, help="write report.json, det.png, hist.png here")
    pt.add_argument("--json", default=None, metavar="FILE", help="write the figures as JSON to this file")
    pt.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_args(pt, score_norm=True)
    pt.set_defaults(func=cmd_eval)
    return p


def _fail(a: argparse.Namespace, e: BaseException) -> int:
    msg = " ".join(str(e).split()) or type(e).__name__  # one line
    if getattr(a, "json", None) is True:
        print(json.dumps({"error": msg, "type": type(e).__name__, "exit": 2}))
    else:
        print(f"nestspk: error: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return a.func(a)
    except (NestspkError, ValueError, OSError) as e:  # OSError: e.g. a report folder that cannot be written
        return _fail(a, e)
    except KeyboardInterrupt:
        print("nestspk: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
