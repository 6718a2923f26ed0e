"""Manifest reading, cross-session trial building and the shipped lists (nestspk.corpus, numpy only)."""
import random
from pathlib import Path

import pytest

from nestspk.corpus import (ListError, Utterance, build_trials, centre_crop, read_set_manifest, read_train_list,
                            read_trials, split_segment)

REPO = Path(__file__).resolve().parent.parent
LISTS = REPO / "weights" / "lists"


def _manifest(tmp_path: Path, rows: list[str], header: str = "path\tspeaker\tsession\tseconds") -> Path:
    d = tmp_path / "set"
    d.mkdir()
    (d / "manifest.tsv").write_text("\n".join([header, *rows]) + "\n")
    return d


def test_manifest_rows_get_paths_relative_to_the_root(tmp_path):
    d = _manifest(tmp_path, ["a/x y.opus\tspk1\tch1\t3.5", "b/z.opus\tspk2\tch9\t1.25"])
    rows = read_set_manifest(d, tmp_path)
    assert rows == [Utterance("set/a/x y.opus", "spk1", "ch1", 3.5), Utterance("set/b/z.opus", "spk2", "ch9", 1.25)]


@pytest.mark.parametrize("rows, header, match", [
    (["a.opus\tspk\tch\t3.0"], "path\tspeaker\tseconds", ":1: expected the header"),
    (["a.opus\tspk\tch"], None, ":2: expected 4 tab-separated"),
    (["a.opus\tspk\tch\tlong"], None, ":2: expected 4 tab-separated"),
    (["a.opus\tspk\tch\t3.0", "b.opus\t\tch\t3.0"], None, ":3: empty field"),
    (["a.opus\tspk\tch\t-1"], None, ":2: empty field or non-positive"),
])
def test_malformed_manifest_names_file_and_line(tmp_path, rows, header, match):
    d = _manifest(tmp_path, rows, header or "path\tspeaker\tsession\tseconds")
    with pytest.raises(ListError, match=match):
        read_set_manifest(d, tmp_path)


def test_train_list_paths_may_hold_spaces(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("# comment\nar01 arabic-speech-commands/01/zoom in.opus\n\nspk b.flac\n")
    assert read_train_list(p) == [("ar01", "arabic-speech-commands/01/zoom in.opus"), ("spk", "b.flac")]
    p.write_text("lonely\n")
    with pytest.raises(ListError, match="train.txt:1"):
        read_train_list(p)


@pytest.mark.parametrize("text, match", [
    ("# only comments\n\n", "no trials"),
    ("1 a.flac\n", ":1: expected 'label path1 path2'"),
    ("2 a.flac b.flac\n", ":1: expected"),
    ("1 a.flac b.flac\n0 a.flac@3-1 b.flac\n", ":2: segment"),
    ("1 a.flac@x-2 b.flac\n", ":1: segment"),
])
def test_malformed_trial_lists_name_file_and_line(tmp_path, text, match):
    p = tmp_path / "trials.txt"
    p.write_text(text)
    with pytest.raises(ListError, match=match):
        read_trials(p)


def test_segments_and_centre_crops():
    assert split_segment("a/b.opus@1.50-3.50") == ("a/b.opus", 1.5, 3.5)
    assert split_segment("a/b.opus") == ("a/b.opus", None, None)
    assert centre_crop(Utterance("a.opus", "s", "c", 10.0), 2.0) == "a.opus@4.00-6.00"
    assert centre_crop(Utterance("a.opus", "s", "c", 1.5), 2.0) == "a.opus"


def _utts() -> list[Utterance]:
    out = []
    for s in range(5):
        for c in range(1 + s % 3):  # speakers 0 and 3 have one session
            for u in range(4):
                out.append(Utterance(f"{s}/{c}/{u}.opus", f"spk{s}", f"{s}-{c}", 5.0))
    return out


def test_cross_session_targets_never_pair_one_session():
    trials = build_trials(_utts(), targets_per_speaker=10, nontarget_ratio=3.0, rng=random.Random(0))
    targets = [(a, b) for y, a, b in trials if y == 1]
    nontargets = [(a, b) for y, a, b in trials if y == 0]
    assert targets and all(a.speaker == b.speaker and a.session != b.session for a, b in targets)
    assert {a.speaker for a, _ in targets} == {"spk1", "spk2", "spk4"}  # single-session speakers give none
    assert all(a.speaker != b.speaker for a, b in nontargets)
    assert len(nontargets) == 3 * len(targets)
    assert len({(a.path, b.path) for _, a, b in trials}) == len(trials)
    same = build_trials(_utts(), 10, 1.0, random.Random(0), cross_session=False)
    assert any(a.session == b.session for y, a, b in same if y == 1)


def _speaker(spec: str) -> str:
    parts = spec.split("/")
    return parts[1]  # <set>/<speaker>/...


def test_shipped_lists_keep_speakers_disjoint_and_targets_cross_session():
    train = {s for s, _ in read_train_list(LISTS / "train.txt")}
    held = {}
    for name in ("dev_trials.txt", "test_trials.txt", "speechocean_trials.txt"):
        trials = read_trials(LISTS / name)
        spk = {_speaker(x) for _, a, b in trials for x in (a, b)}
        so = name.startswith("speechocean")
        held[name] = {f"so{s}" if so else s for s in spk}
        assert not held[name] & train, f"{name} shares speakers with train.txt"
        if not so:  # LibriSpeech: <set>/<speaker>/<chapter>/file -> targets from different chapters
            for y, a, b in trials:
                if y == 1:
                    assert a.split("/")[2] != b.split("/")[2], (a, b)
    assert not held["dev_trials.txt"] & held["test_trials.txt"]
    short = read_trials(LISTS / "test_2s_trials.txt")
    assert [(y, split_segment(a)[0], split_segment(b)[0]) for y, a, b in short] == read_trials(LISTS / "test_trials.txt")
    for _, a, b in short[:200]:
        for x in (a, b):
            _, s, e = split_segment(x)
            assert s is None or abs(e - s - 2.0) < 1e-6
