"""Corpora, training lists and trial lists (numpy only: no torch).

Data root layout: ``../shared/data`` (or ``$NESTSPK_DATA``), one folder per set. The newer sets have a
``manifest.tsv`` (``path speaker session seconds``, tab-separated, paths relative to the set's folder); the two
older ones are read by their file-name conventions (LibriSpeech ``SPK-CHAPTER-UTT``, FSDD ``DIGIT_SPEAKER_INDEX``).

File formats written and read here (paths relative to the data root):

* training list: one ``speaker path`` line per recording;
* trial list: VoxCeleb style ``label path1 path2``; a path may name a segment as ``path@START-END`` (seconds).
"""
from __future__ import annotations

import itertools
import logging
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import TARGET_SAMPLE_RATE, audio_info, load_audio
from .errors import NestspkError

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3"}
_LIBRI = re.compile(r"^(\d+)-(\d+)-(\d+)$")
_FSDD = re.compile(r"^(\d+)_([A-Za-z]+)_(\d+)$")


class ListError(NestspkError, ValueError):
    """A malformed manifest, training list or trial list (the message names the file and line)."""


@dataclass(frozen=True)
class Utterance:
    """One recording: ``path`` relative to the data root, ``session`` = recording session (LibriSpeech chapter)."""

    path: str
    speaker: str
    session: str
    seconds: float


def default_data_root() -> Path:
    """``$NESTSPK_DATA``, else ``../shared/data`` relative to the working directory."""
    return Path(os.environ.get("NESTSPK_DATA", Path.cwd().parent / "shared" / "data"))


def missing_data_message(root: Path, what: str) -> str:
    """One line saying which data root was tried and how to point at another."""
    return (f"{what} not found under the data root {root} (set --root or NESTSPK_DATA; the corpora are "
            f"LibriSpeech, speechocean762, FSDD etc., see ../shared/data/README.md)")


def speaker_of(path: Path) -> str | None:
    """Speaker id from a LibriSpeech-style (SPK-CHAPTER-UTT) or FSDD-style (DIGIT_SPEAKER_INDEX) name."""
    stem = path.stem
    if m := _LIBRI.match(stem):
        return m.group(1)
    if m := _FSDD.match(stem):
        return m.group(2)
    return None


def read_set_manifest(set_dir: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Utterance]:
    """Rows of ``set_dir/manifest.tsv`` as :class:`Utterance` with paths relative to ``root``
    (default: the parent of ``set_dir``)."""
    set_dir = Path(set_dir)
    root = Path(root) if root is not None else set_dir.parent
    prefix = set_dir.resolve().relative_to(root.resolve()).as_posix()
    path = set_dir / "manifest.tsv"
    if not path.is_file():
        raise ListError(f"{path}: no manifest.tsv")
    lines = path.read_text().splitlines()
    if not lines or lines[0].split("\t") != ["path", "speaker", "session", "seconds"]:
        raise ListError(f"{path}:1: expected the header 'path<TAB>speaker<TAB>session<TAB>seconds'")
    rows = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            rel, spk, session, seconds = parts
            sec = float(seconds)
        except ValueError:
            raise ListError(f"{path}:{n}: expected 4 tab-separated fields with numeric seconds, got {line[:120]!r}") from None
        if not (spk and session and rel) or not np.isfinite(sec) or sec <= 0:
            raise ListError(f"{path}:{n}: empty field or non-positive seconds in {line[:120]!r}")
        rows.append(Utterance(f"{prefix}/{rel}", spk, session, sec))
    return rows


def scan_by_name(folder: str | os.PathLike, root: str | os.PathLike) -> list[Utterance]:
    """Recordings of a set without a manifest, speaker (and LibriSpeech chapter) from the file name."""
    folder, root = Path(folder), Path(root)
    rows = []
    for p in sorted(q for q in folder.rglob("*") if q.suffix.lower() in AUDIO_SUFFIXES):
        spk = speaker_of(p)
        if spk is None:
            continue
        m = _LIBRI.match(p.stem)
        frames, sr, _ = audio_info(p)
        rows.append(Utterance(p.relative_to(root).as_posix(), spk, m.group(2) if m else spk, frames / sr))
    return rows


def read_train_list(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``speaker path`` lines -> ``[(speaker, path)]``."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.strip().split(None, 1)  # the path is the rest of the line: it may hold spaces
        if len(parts) != 2:
            raise ListError(f"{path}:{n}: expected 'speaker path', got {line[:120]!r}")
        rows.append((parts[0], parts[1]))
    return rows


def describe_train_list(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """One line: hours, speakers and recordings of a training list, per set (durations from the file headers)."""
    rows = read_train_list(path)
    sets: dict[str, list[float]] = {}
    for _, rel in rows:
        frames, sr, _ = audio_info(Path(root) / rel)
        sets.setdefault(rel.split("/", 1)[0], []).append(frames / sr)
    hours = sum(sum(v) for v in sets.values()) / 3600
    parts = ", ".join(f"{k} {len(v)} files / {sum(v) / 3600:.2f} h" for k, v in sorted(sets.items()))
    return (f"{hours:.2f} h of real speech, {len({s for s, _ in rows})} speakers, {len(rows)} recordings "
            f"({Path(path).name}: {parts})")


def read_trials(path: str | os.PathLike) -> list[tuple[int, str, str]]:
    """``label path1 path2`` lines -> ``[(label, spec1, spec2)]``; at least one trial of each label."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            raise ListError(f"{path}:{n}: expected 'label path1 path2' with label 0/1, got {line[:120]!r}")
        try:
            for spec in parts[1:]:
                split_segment(spec)
        except ValueError as e:
            raise ListError(f"{path}:{n}: {e}") from None
        rows.append((int(parts[0]), parts[1], parts[2]))
    if not rows:
        raise ListError(f"{path}: no trials (only blank or comment lines)")
    return rows


def split_segment(spec: str) -> tuple[str, float | None, float | None]:
    """``'a.flac@1.5-3.0'`` -> ``('a.flac', 1.5, 3.0)``; a plain path -> ``(path, None, None)``."""
    if "@" not in spec:
        return spec, None, None
    path, seg = spec.rsplit("@", 1)
    try:
        start, end = (float(v) for v in seg.split("-"))
    except ValueError:
        raise ValueError(f"segment {spec!r} is not 'path@START-END' in seconds") from None
    if not (0 <= start < end):
        raise ValueError(f"segment {spec!r}: need 0 <= START < END")
    return path, start, end


def load_segment(spec: str, root: str | os.PathLike) -> np.ndarray:
    """A trial-list entry (path or ``path@START-END``) as a 16 kHz mono float32 waveform."""
    path, start, end = split_segment(spec)
    full = Path(path) if os.path.isabs(path) else Path(root) / path
    wav = load_audio(full, name=spec)
    if start is not None:
        wav = load_audio(wav[int(start * TARGET_SAMPLE_RATE): int(end * TARGET_SAMPLE_RATE)], name=spec)
    return wav


def centre_crop(utt: Utterance, seconds: float) -> str:
    """Trial spec of the centre ``seconds`` of ``utt`` (the whole path if it is not longer)."""
    if utt.seconds <= seconds:
        return utt.path
    start = int((utt.seconds - seconds) / 2 * 100) / 100
    return f"{utt.path}@{start:.2f}-{start + seconds:.2f}"


def build_trials(utts: list[Utterance], targets_per_speaker: int, nontarget_ratio: float, rng: random.Random,
                 cross_session: bool = True) -> list[tuple[int, Utterance, Utterance]]:
    """Sampled verification trials over ``utts``.

    Targets pair two utterances of one speaker, from **different sessions** when ``cross_session`` (speakers with a
    single session then give none); non-targets pair two different speakers. ``targets_per_speaker`` caps the
    targets of each speaker; non-targets number ``nontarget_ratio`` x the targets. No pair appears twice.
    """
    by_spk: dict[str, list[Utterance]] = {}
    for u in utts:
        by_spk.setdefault(u.speaker, []).append(u)
    speakers = sorted(by_spk)
    if len(speakers) < 2:
        raise ValueError("build_trials needs at least two speakers")
    trials: list[tuple[int, Utterance, Utterance]] = []
    for spk in speakers:
        pairs = [(a, b) for a, b in itertools.combinations(by_spk[spk], 2)
                 if not cross_session or a.session != b.session]
        rng.shuffle(pairs)
        trials += [(1, a, b) for a, b in pairs[:targets_per_speaker]]
    n_target = len(trials)
    want = int(round(n_target * nontarget_ratio))
    seen = set()
    while len(seen) < want:
        s1, s2 = rng.sample(speakers, 2)
        a, b = rng.choice(by_spk[s1]), rng.choice(by_spk[s2])
        key = (a.path, b.path) if a.path < b.path else (b.path, a.path)
        if key in seen:
            continue
        seen.add(key)
        trials.append((0, a, b))
    return trials


def write_trials(path: Path, trials: list[tuple[int, Utterance, Utterance]], crop_seconds: float | None = None) -> int:
    """Write ``label spec1 spec2`` lines; ``crop_seconds`` takes the centre of each side. Returns the count."""
    def spec(u: Utterance) -> str:
        return centre_crop(u, crop_seconds) if crop_seconds else u.path

    with open(path, "w") as f:
        for label, a, b in trials:
            f.write(f"{label} {spec(a)} {spec(b)}\n")
    return len(trials)


def _cap(utts: list[Utterance], per_group: int, key, rng: random.Random) -> list[Utterance]:
    groups: dict[str, list[Utterance]] = {}
    for u in utts:
        groups.setdefault(key(u), []).append(u)
    out = []
    for k in sorted(groups):
        g = sorted(groups[k], key=lambda u: u.path)
        rng.shuffle(g)
        out += sorted(g[:per_group], key=lambda u: u.path)
    return out


@dataclass
class SplitPlan:
    """How :func:`prepare_lists` splits speakers (counts) and samples trials."""

    libri_dev_speakers: int = 9
    speechocean_test_speakers: int = 50
    libri_utts_per_chapter: int = 20
    libri_min_seconds: float = 3.0
    libri_targets_per_speaker: int = 250
    speechocean_utts_per_speaker: int = 16
    speechocean_min_seconds: float = 2.5
    speechocean_targets_per_speaker: int = 40
    nontarget_ratio: float = 4.0
    max_train_seconds_per_speaker: float = 600.0
    short_seconds: float = 2.0
    seed: int = 0


def prepare_lists(root: str | os.PathLike, out: str | os.PathLike, plan: SplitPlan | None = None) -> dict:
    """Write ``train.txt`` and the trial lists into ``out``; speakers disjoint across train/dev/test.

    * dev / test: LibriSpeech test-clean speakers with 2+ chapters (split by ``plan``), target trials across
      chapters (= recording sessions); ``test_2s_trials.txt`` is the same trials on each side's centre 2 s.
    * ``speechocean_trials.txt`` (+ ``_2s``): held-out speechocean762 speakers (children and adults,
      Mandarin-L1 English); one session per speaker, so its targets are different utterances of one session.
    * train: everything else (train-clean-5 + snippets with their shared speakers as one class, the other
      speechocean762 speakers, Arabic Speech Commands, Common Voice fa, single-chapter test-clean speakers),
      capped at ``max_train_seconds_per_speaker`` per speaker; FSDD is kept out (cross-condition test only).
    """
    plan = plan or SplitPlan()
    root, out = Path(root), Path(out)
    rng = random.Random(plan.seed)
    libri = read_set_manifest(root / "librispeech-test-clean", root)
    chapters: dict[str, set[str]] = {}
    for u in libri:
        chapters.setdefault(u.speaker, set()).add(u.session)
    multi = sorted(s for s, c in chapters.items() if len(c) >= 2)
    rng.shuffle(multi)
    dev_spk, test_spk = set(multi[:plan.libri_dev_speakers]), set(multi[plan.libri_dev_speakers:])
    so = read_set_manifest(root / "speechocean762", root)
    so_spk = sorted({u.speaker for u in so})
    rng.shuffle(so_spk)
    so_test = set(so_spk[:plan.speechocean_test_speakers])

    train: list[Utterance] = [u for u in libri if u.speaker not in dev_spk | test_spk]
    train += [u for u in so if u.speaker not in so_test]
    for name in ("librispeech-train-clean-5", "arabic-speech-commands", "commonvoice-fa"):
        train += read_set_manifest(root / name, root)
    snippets = scan_by_name(root / "librispeech-snippets", root)
    have = {Path(u.path).stem for u in train}
    train += [u for u in snippets if Path(u.path).stem not in have]  # 6 snippets are also in train-clean-5
    held_out = dev_spk | test_spk | so_test
    assert not held_out & {u.speaker for u in train}, "held-out speaker in training"
    # cap per speaker (two Common Voice speakers hold most of that set): random utterances up to the budget
    by_spk: dict[str, list[Utterance]] = {}
    for u in sorted(train, key=lambda u: u.path):
        by_spk.setdefault(u.speaker, []).append(u)
    capped = []
    for spk in sorted(by_spk):
        us = by_spk[spk][:]
        rng.shuffle(us)
        total = 0.0
        for u in us:
            if total >= plan.max_train_seconds_per_speaker:
                break
            capped.append(u)
            total += u.seconds
    capped.sort(key=lambda u: (u.speaker, u.path))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.txt", "w") as f:
        for u in capped:
            f.write(f"{u.speaker} {u.path}\n")

    stats = {"train_speakers": len({u.speaker for u in capped}), "train_files": len(capped),
             "train_hours": round(sum(u.seconds for u in capped) / 3600, 2)}
    pool = _cap([u for u in libri if u.seconds >= plan.libri_min_seconds], plan.libri_utts_per_chapter,
                lambda u: f"{u.speaker}/{u.session}", rng)
    for name, spk in (("dev", dev_spk), ("test", test_spk)):
        trials = build_trials([u for u in pool if u.speaker in spk], plan.libri_targets_per_speaker,
                              plan.nontarget_ratio, rng, cross_session=True)
        stats[f"{name}_speakers"] = len(spk)
        stats[f"{name}_trials"] = write_trials(out / f"{name}_trials.txt", trials)
        stats[f"{name}_targets"] = sum(t[0] for t in trials)
        if name == "test":
            write_trials(out / "test_2s_trials.txt", trials, plan.short_seconds)
    so_pool = _cap([u for u in so if u.speaker in so_test and u.seconds >= plan.speechocean_min_seconds],
                   plan.speechocean_utts_per_speaker, lambda u: u.speaker, rng)
    trials = build_trials(so_pool, plan.speechocean_targets_per_speaker, plan.nontarget_ratio, rng, cross_session=False)
    stats["speechocean_speakers"] = len(so_test)
    stats["speechocean_trials"] = write_trials(out / "speechocean_trials.txt", trials)
    stats["speechocean_targets"] = sum(t[0] for t in trials)
    write_trials(out / "speechocean_2s_trials.txt", trials, plan.short_seconds)
    return stats
