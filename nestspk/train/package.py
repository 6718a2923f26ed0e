"""Turn a training run into shipped weights: ``<name>.pt`` + ``<name>.json`` card."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch

from ..card import CARD_FORMAT, ModelCard, sha256_file
from ..corpus import default_data_root, describe_train_list
from ..fileio import atomic_write
from ..models import count_parameters
from .seed_variants import build_training_model
from .trainer import DevSet


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "model_options":
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def _train_command(cfg: dict) -> str:
    """The ``nestspk-train`` command that reproduces ``cfg``: its shipped config plus a ``--set`` for every value
    that differs from it (machine-local paths left out: the pack folder, and the teacher targets as ``teacher.npy``)."""
    from .config import load_config

    name = cfg["name"].split("_seed")[0]
    cmd = f"nestspk-train --config {name} --device cuda"
    try:
        base = _leaves(load_config(name).to_dict())
    except FileNotFoundError:
        base = {}
    run = _leaves(cfg)
    sets = []
    for key, value in run.items():
        if key in ("data.pack", "name") or base.get(key) == value:
            continue
        if key == "distill.targets":
            value = "teacher.npy" if value else value
        sets.append(f" --set {key}={json.dumps(value) if isinstance(value, (list, dict)) else value}")
    cmd += "".join(sorted(sets))
    if (cfg.get("distill") or {}).get("targets"):
        cmd += " (teacher.npy: python benchmarks/resemblyzer_embed.py list weights/lists/train.txt --out teacher.npy)"
    return cmd


def evaluate_run(run: Path, trials: Path, root: Path | None = None) -> dict:
    """EER / minDCF of a run's best checkpoint on a trial list (CPU)."""
    cfg = json.loads((run / "config.json").read_text())
    model = build_training_model(cfg["model"], cfg["model_options"])
    model.load_state_dict(torch.load(run / "best.pt", map_location="cpu", weights_only=True)["model"])
    return DevSet(trials, root or default_data_root()).evaluate(model.eval(), torch.device("cpu"))


def package_run(run: Path, name: str, weights_dir: Path, test_trials: Path | None = None) -> ModelCard:
    """Copy the run's best checkpoint to ``weights_dir/name.pt`` and write its card (through :class:`ModelCard`).

    The card's default threshold is the EER operating point on the dev trials; test-trial
    metrics are measured here (CPU) if ``test_trials`` exists.
    """
    cfg = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    state = torch.load(run / "best.pt", map_location="cpu", weights_only=True)["model"]
    model = build_training_model(cfg["model"], cfg["model_options"])
    model.load_state_dict(state)
    weights_dir.mkdir(parents=True, exist_ok=True)
    pt = weights_dir / f"{name}.pt"
    with atomic_write(pt) as f:
        torch.save({"model": {k: v.contiguous() for k, v in model.state_dict().items()}}, f)
    root = Path(cfg["data"]["root"]) if cfg["data"]["root"] else default_data_root()
    metrics = {"dev": summary["best_dev"]}
    if test_trials is not None and test_trials.is_file():
        metrics["test"] = DevSet(test_trials, root).evaluate(model.eval(), torch.device("cpu"))
    raw = {
        "format": CARD_FORMAT,
        "name": name,
        "model": cfg["model"],
        "model_options": cfg["model_options"],
        "frontend": model.frontend_cfg.to_dict(),
        "embed_dim": model.embed_dim,
        "parameters": count_parameters(model),
        "weights": {"file": pt.name, "sha256": sha256_file(pt)},
        # the default decision threshold; `python -m nestspk.scoring --update-card` adds the other points
        "operating_points": {"fitted_on": Path(cfg["data"]["dev_trials"]).name,
                             "raw": {"eer": summary["best_dev"]["threshold"]}},
        "metrics": metrics,
        "metrics_note": "LibriSpeech test-clean trials across chapters (recording sessions); dev and test "
                        "speakers disjoint from training (weights/lists/, nestspk-train prepare)",
        "training": {
            "config": cfg,
            "data": describe_train_list(Path(cfg["data"]["train_manifest"]), root),
            "train_speakers": summary["train_speakers"],
            "epochs_trained": summary["epochs"],
            "steps": summary["steps"],
            "best_epoch": summary["best_epoch"],
            "status": summary["status"],
            "nan_events": summary["nan_events"],
            "command": _train_command(cfg),
            "git_commit": _git_commit(),
        },
    }
    card = ModelCard.from_dict(raw, weights_dir / f"{name}.json")
    card.save()
    return card
