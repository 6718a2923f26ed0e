import csv
import json
import math
from pathlib import Path

import pytest
import torch

from nestspk.train.config import apply_overrides, load_config, packaged_configs
from nestspk.train.loss import AAMSoftmax
from nestspk.train.trainer import TrainingDiverged, train


def test_shipped_configs_load():
    assert {"nested_4level", "resnetse34l_asp", "nested_seed_prefix", "nested_seed_fixed", "smoke"} <= set(packaged_configs())
    cfg = load_config("nested_4level")
    o = cfg.optim
    assert (o.batch_size, o.lr, o.lr_decay, o.warmup_steps, o.weight_decay, o.grad_clip) == (128, 2e-3, 0.84, 300, 2e-4, 5.0)
    assert cfg.loss.safe and cfg.amp == "bf16"
    assert (cfg.data.crop_seconds, cfg.data.crop_max_seconds, cfg.data.augment.real_noise_dir) == (2.0, 4.0, "noise")
    base = load_config("resnetse34l_asp")
    assert cfg.data.augment.gap_prob == 0.3 and base.data.augment.gap_prob == 0.0  # the baseline predates the gaps
    base.data.augment.gap_prob = cfg.data.augment.gap_prob
    assert (base.optim, base.data, base.loss, base.amp) == (cfg.optim, cfg.data, cfg.loss, cfg.amp)  # same recipe
    pre = load_config("nested_seed_prefix")
    assert pre.model_options["nested_norm"] == "batch" and not pre.loss.safe and pre.amp == "fp16"
    with pytest.raises(ValueError):
        apply_overrides(load_config("smoke"), ["optim.nope=1"])


def _cos_one_batch():
    """Embeddings pointing exactly at their class centre: cos = 1 for the target class."""
    head = AAMSoftmax(8, 4, safe=False)
    emb = head.weight.detach()[:2].clone().requires_grad_(True)
    return head, emb, torch.tensor([0, 1])


def test_common_aam_softmax_gradient_is_infinite_at_cos_one():
    """The NaN mechanism: d sqrt(1 - cos^2) / d cos = -cos / sin is infinite at cos = 1."""
    head, emb, labels = _cos_one_batch()
    # fp16 rounds every cosine within ~5e-4 of 1 to exactly 1.0; emulate with an exact hit in fp32
    cos = head.cosine(emb).detach().clone().fill_diagonal_(1.0).requires_grad_(True)
    sin = torch.sqrt((1.0 - cos * cos).clamp(0, 1))
    logits = head._logits(cos, sin, labels)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    assert not torch.isfinite(cos.grad).all()
    # and gradient-norm clipping cannot repair it: 5 / inf = 0 and 0 * inf = nan
    p = torch.nn.Parameter(torch.zeros_like(cos))
    p.grad = cos.grad.clone()
    torch.nn.utils.clip_grad_norm_(p, 5.0)
    assert torch.isnan(p.grad).any()


def test_safe_aam_softmax_is_finite_at_cos_one_and_in_fp16():
    head = AAMSoftmax(8, 4, safe=True)
    emb = head.weight.detach()[:2].clone().requires_grad_(True)
    loss, _ = head(emb, torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss16, _ = head(emb.detach().clone().requires_grad_(True), torch.tensor([0, 1]))
    assert loss16.dtype == torch.float32 and torch.isfinite(loss16)


def test_smoke_training_decreases_loss_without_nan(tmp_path, training_data):
    cfg = apply_overrides(load_config("smoke"), ["optim.epochs=3"])
    s = train(cfg, tmp_path / "run", device="cpu", progress=False)
    assert s["status"] == "finished" and s["epochs"] == 3 and s["nan_events"] == 0
    rows = list(csv.DictReader(open(tmp_path / "run" / "epochs.csv")))
    losses = [float(r["loss"]) for r in rows]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    steps = list(csv.DictReader(open(tmp_path / "run" / "steps.csv")))
    assert {"grad_norm", "grad/levels.0", "weight/level2", "act_rms/level4", "nested_rms/level2", "lr"} <= set(steps[0])
    assert all(float(r["act_rms/level1"]) > 0 for r in steps)  # read through forward hooks (train/telemetry.py)
    assert 0.0 < float(steps[-1]["weight/level3"]) < 1.0
    # resume: asking for one more epoch continues from last.pt instead of restarting
    s2 = train(apply_overrides(load_config("smoke"), ["optim.epochs=4"]), tmp_path / "run", device="cpu", progress=False)
    assert s2["epochs"] == 4 and s2["steps"] == s["steps"] + cfg.optim.steps_per_epoch


def test_sentinel_stops_and_saves_the_batch(tmp_path, training_data, monkeypatch):
    monkeypatch.setenv("NESTSPK_DEBUG_NAN_STEP", "3")
    cfg = load_config("smoke")
    with pytest.raises(TrainingDiverged, match="non-finite"):
        train(cfg, tmp_path / "run", device="cpu", progress=False)
    report = json.loads((tmp_path / "run" / "diverged.json").read_text())
    assert report["step"] == 3
    batch = torch.load(tmp_path / "run" / "nan_batch.pt", weights_only=True)
    assert batch["wav"].shape[0] == cfg.optim.batch_size
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"


def test_distillation_and_real_noise_train_from_a_pack(tmp_path, training_data):
    """The shipped recipe's parts on CPU: decoded pack, 2 crop lengths, real noise, a teacher target per recording."""
    import numpy as np

    from nestspk.corpus import default_data_root
    from nestspk.train.data import write_pack

    write_pack("weights/lists/smoke_train.txt", default_data_root(), tmp_path / "pack", workers=1)
    n = len(open("weights/lists/smoke_train.txt").read().splitlines())
    np.save(tmp_path / "teacher.npy", np.random.default_rng(0).standard_normal((n, 16)).astype("float32"))
    cfg = apply_overrides(load_config("smoke"), [
        f"data.pack={tmp_path / 'pack'}", f"distill.targets={tmp_path / 'teacher.npy'}", "distill.weight=5",
        "data.augment.real_noise_dir=noise", "data.augment.real_noise_prob=0.5", "optim.warmup_steps=3", "optim.epochs=1"])
    s = train(cfg, tmp_path / "run", device="cpu", progress=False)
    assert s["status"] == "finished" and s["nan_events"] == 0
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ck["distill"]["proj.weight"].shape == (16, 64)
    rows = list(csv.DictReader(open(tmp_path / "run" / "steps.csv")))
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] < lrs[2]  # linear warm-up
    with pytest.raises(ValueError, match="rows for"):
        np.save(tmp_path / "teacher.npy", np.zeros((n + 1, 16), dtype="float32"))
        train(cfg, tmp_path / "run2", device="cpu", progress=False)


def test_package_writes_a_card_whose_dev_figures_the_runtime_reproduces(tmp_path, training_data):
    """nestspk-train package goes through ModelCard; the card's dev EER is what score_trials gives users' runtime."""
    from nestspk.card import ModelCard
    from nestspk.evaluation import score_trials
    from nestspk.runtime import make_embedder
    from nestspk.train.package import package_run

    s = train(apply_overrides(load_config("smoke"), ["optim.epochs=1"]), tmp_path / "run", device="cpu",
              progress=False)
    assert s["status"] == "finished"
    card = package_run(tmp_path / "run", "tiny", tmp_path / "weights", Path("weights/lists/smoke_dev_trials.txt"))
    loaded = ModelCard.load(tmp_path / "weights" / "tiny.json")
    assert loaded.to_dict() == card.to_dict()
    assert loaded.threshold() == s["best_dev"]["threshold"]
    loaded.verified(loaded.weights)  # the sha256 in the card is that of the written .pt
    embedder = make_embedder(loaded, backend="torch", device="cpu")
    m = score_trials(embedder, "weights/lists/smoke_dev_trials.txt").metrics()
    assert m["eer"] == pytest.approx(loaded.metrics["dev"]["eer"], abs=1e-9)
    assert m["eer"] == pytest.approx(loaded.metrics["test"]["eer"], abs=1e-9)
    assert not list((tmp_path / "weights").glob("*.nestspk-tmp"))


def test_seed_prefix_variant_trains(tmp_path, training_data):
    """The training-only seed model (BatchNorm paths, interpolation) still runs through nestspk-train."""
    cfg = apply_overrides(load_config("smoke"), ["model=nested_seed", "model_options.nested_norm=batch",
                                                 "model_options.align=interpolate", "optim.epochs=1"])
    s = train(cfg, tmp_path / "run", device="cpu", progress=False)
    assert s["status"] == "finished" and s["nan_events"] == 0
    assert load_config("nested_seed_prefix").model == "nested_seed"


def _sampler(tmp_path, **aug):
    import numpy as np
    import soundfile as sf

    from nestspk.train.data import AugmentConfig, BatchSampler, WaveformBank

    rng = np.random.default_rng(0)
    rows = []
    for k in range(2):  # band-limited noise: no exact zero sample anywhere
        x = (0.3 * np.sin(np.arange(16000 * 3) * 0.05 * (k + 1)) + 0.05 * rng.standard_normal(16000 * 3) + 0.5)
        sf.write(tmp_path / f"r{k}.wav", (x / 2).astype(np.float32), 16000, subtype="PCM_16")
        rows.append((f"s{k}", f"r{k}.wav"))
    bank = WaveformBank(rows, tmp_path, torch.device("cpu"))
    cfg = AugmentConfig(speeds=(1.0,), noise_prob=0.0, babble_prob=0.0, reverb_prob=0.0, **aug)
    return BatchSampler(bank, 2.0, cfg, seed=0)


def test_gap_augmentation_silence_leaves_speech_in_one_piece(tmp_path):
    wav, labels, _ = _sampler(tmp_path, gap_prob=1.0, gap_silence_prob=1.0, gap_fraction=(0.2, 0.5)).sample(64)
    assert wav.shape == (64, 32000) and torch.isfinite(wav).all()
    for row in wav:
        nz = row.nonzero().flatten()
        run = int(nz[-1] - nz[0] + 1)
        assert run == len(nz), "the speech is one contiguous piece, zeros only around it"
        assert 0.2 * 32000 - 2 <= 32000 - run <= 0.5 * 32000 + 2
    starts = torch.stack([row.nonzero().flatten()[0] for row in wav])
    assert (starts > 0).any() and len(set(starts.tolist())) > 10  # offsets vary (some leading, some trailing)


def test_gap_augmentation_noise_fill_and_off_by_default(tmp_path):
    noisy, _, _ = _sampler(tmp_path, gap_prob=1.0, gap_silence_prob=0.0).sample(16)
    assert (noisy != 0).float().mean() > 0.99  # gaps filled with noise, not zeros
    off_a, _, _ = _sampler(tmp_path).sample(8)
    off_b, _, _ = _sampler(tmp_path, gap_prob=0.0, gap_silence_prob=1.0).sample(8)
    assert torch.equal(off_a, off_b) and (off_a != 0).float().mean() > 0.99


def test_card_command_names_every_override():
    from nestspk.train.package import _train_command

    cfg = load_config("nested_4level")
    apply_overrides(cfg, ["data.augment.gap_prob=0.5", "distill.weight=300", "distill.targets=/tmp/x/teacher.npy",
                          "data.pack=/tmp/pack", "optim.epochs=2"])
    cmd = _train_command(cfg.to_dict())
    assert cmd.startswith("nestspk-train --config nested_4level --device cuda")
    for part in ("--set data.augment.gap_prob=0.5", "--set distill.weight=300", "--set distill.targets=teacher.npy",
                 "--set optim.epochs=2"):
        assert part in cmd
    assert "/tmp" not in cmd.split(" (")[0] and "data.pack" not in cmd
    assert _train_command(load_config("nested_4level").to_dict()) == "nestspk-train --config nested_4level --device cuda"
