"""The one evaluation path (nestspk.evaluation.score_trials) and ``nestspk eval``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nestspk.card import ModelCard
from nestspk.cli import main as cli_main
from nestspk.evaluation import MissingDataError, resolve_trials, score_trials
from nestspk.runtime import make_embedder
from nestspk.scoring import Cohort
from torchless import TORCH_LOADED, run_without_torch


@pytest.fixture(scope="module")
def onnx_embedder():
    return make_embedder("nested", backend="onnx", device="cpu")


@pytest.fixture()
def tiny(tmp_path: Path, example_files) -> tuple[Path, Path]:
    """A data root with the three examples plus a 0.2 s clip, and a trial list over them (relative paths)."""
    root = tmp_path / "data"
    root.mkdir()
    for k, p in example_files.items():
        (root / f"{k}.flac").write_bytes(p.read_bytes())
    x, sr = sf.read(example_files["b"], dtype="float32")
    sf.write(root / "short.flac", x[: sr // 5], sr)
    trials = tmp_path / "trials.txt"
    trials.write_text("1 a1.flac a2.flac\n0 a1.flac b.flac\n0 a2.flac b.flac\n1 a1.flac@0-3 a1.flac@3-6\n"
                      "0 short.flac a1.flac\n")
    return root, trials


def test_scores_are_the_verifiers_cosines_and_short_segments_are_skipped(onnx_embedder, tiny) -> None:
    from nestspk import Verifier

    root, trials = tiny
    res = score_trials(onnx_embedder, trials, root)
    assert res.n_trials == 5 and res.n_kept == 4 and list(res.skipped) == ["short.flac"]
    assert list(res.labels) == [1, 0, 0, 1]
    v = Verifier("nested", backend="onnx", device="cpu")
    a1, a2, b = (v.embed(root / f"{k}.flac") for k in ("a1", "a2", "b"))
    np.testing.assert_allclose(res.scores[:3], [a1 @ a2, a1 @ b, a2 @ b], atol=1e-5)
    m = res.metrics()
    assert m["eer"] == 0.0 and m["n_skipped"] == 1 and m["n_segments_bad"] == 1


def test_asnorm_scores_match_the_cohort(onnx_embedder, tiny) -> None:
    root, trials = tiny
    cohort = Cohort.from_card(onnx_embedder.card)
    raw = score_trials(onnx_embedder, trials, root)
    asn = score_trials(onnx_embedder, trials, root, cohort=cohort)
    assert asn.score_norm == "asnorm" and asn.top_k == cohort.top_k
    from nestspk import Verifier

    v = Verifier("nested", backend="onnx", device="cpu")
    a1, a2 = v.embed(root / "a1.flac"), v.embed(root / "a2.flac")
    np.testing.assert_allclose(asn.scores[0], cohort.normalize(raw.scores[:1], a1[None], a2[None])[0], atol=1e-4)


def test_missing_data_names_the_root_and_how_to_set_it(onnx_embedder, tiny, tmp_path, capsys) -> None:
    _, trials = tiny
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingDataError) as ei:
        score_trials(onnx_embedder, trials, empty)
    msg = str(ei.value)
    assert str(empty) in msg and "--root" in msg and "NESTSPK_DATA" in msg and "LibriSpeech" in msg, msg
    rc = cli_main(["eval", "--trials", str(trials), "--root", str(empty), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and str(empty) in err


def test_trial_lists_resolve_beside_the_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    card = ModelCard.load("nested")
    monkeypatch.chdir(tmp_path)  # no lists/ here
    assert resolve_trials("lists/test_trials.txt", card) == card.dir / "lists" / "test_trials.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        resolve_trials("lists/nope.txt", card)


def test_eval_cli_with_onnx_runs_without_torch(tiny, tmp_path) -> None:
    root, trials = tiny
    out = tmp_path / "res.json"
    res = run_without_torch(f"""
        from nestspk.cli import main

        rc = main(["eval", "--trials", {str(trials)!r}, "--root", {str(root)!r}, "--backend", "onnx",
                   "--device", "cpu", "--quiet", "--json", {str(out)!r}])
        assert rc == 0, rc
        assert not {TORCH_LOADED}, {TORCH_LOADED}
        print("ok")
    """)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stdout + res.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["backend"] == "onnx" and figures["n_kept"] == 4 and figures["n_skipped"] == 1


def test_update_card_writes_cohort_points_and_calibration_through_score_trials(tmp_path: Path, example_files) -> None:
    """Card maintenance on a copied card with tiny lists: the saved card's thresholds are score_trials' figures."""
    import shutil

    from nestspk.scoring import update_card

    src = ModelCard.load("nested")
    folder = tmp_path / "w"
    (folder / "lists").mkdir(parents=True)
    for ref in (src.weights, src.export("fp32")):
        shutil.copy(src.resolve(ref.file), folder / ref.file)
    shutil.copy(src.path, folder / src.path.name)
    root = tmp_path / "data"
    root.mkdir()
    for k, p in example_files.items():
        shutil.copy(p, root / f"{k}.flac")
    (folder / "lists" / "train.txt").write_text("s1 a1.flac\ns1 a2.flac\ns2 b.flac\n")
    (folder / "lists" / "dev_trials.txt").write_text(
        "1 a1.flac@0-3 a1.flac@3-6\n1 a2.flac@0-3 a2.flac@3-6\n1 b.flac@0-3 b.flac@3-6\n"
        "0 a1.flac@0-3 b.flac@0-3\n0 a2.flac@0-3 b.flac@3-6\n0 a1.flac@3-6 b.flac@0-3\n")
    card = update_card(folder / src.path.name, root, top_ks=(2, 4), backend="onnx")
    assert card.cohort["speakers"] == 2 and card.cohort["file"] == f"{src.name}_cohort.npy"
    assert card.asnorm["top_k"] in (2, 4) and card.operating_points_fitted_on == "dev_trials.txt"
    raw = score_trials(make_embedder(card, backend="onnx", device="cpu"), card.list_path("dev"), root)
    assert card.operating_points["raw"] == pytest.approx(raw.operating_points())
    assert card.threshold() == card.operating_points["raw"]["eer"]
    saved = json.loads(card.path.read_text())
    assert saved["format"] == "nestspk-card/2" and "threshold" not in saved
    assert Cohort.from_card(card).size == 4  # 2 speakers x 2 segments, sha256-checked
