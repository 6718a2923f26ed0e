"""Training configuration: YAML file <-> dataclasses. Defaults are the seed's fixed hyperparameters."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

import yaml

from .data import AugmentConfig


@dataclass
class OptimConfig:
    batch_size: int = 48
    lr: float = 8e-4
    lr_decay: float = 0.97  # multiplied in after every epoch
    weight_decay: float = 2e-4
    grad_clip: float = 5.0
    epochs: int = 150
    patience: int = 20  # epochs without a dev-EER improvement before stopping
    steps_per_epoch: int = 100
    warmup_steps: int = 0  # linear warm-up; the decay is continuous: lr * lr_decay ** (step / steps_per_epoch)


@dataclass
class LossConfig:
    margin: float = 0.2
    scale: float = 30.0
    safe: bool = True


@dataclass
class DataConfig:
    train_manifest: str = "weights/lists/train.txt"
    dev_trials: str = "weights/lists/dev_trials.txt"
    root: str | None = None  # None: $NESTSPK_DATA or ../shared/data
    crop_seconds: float = 2.0
    crop_max_seconds: float | None = None  # per batch a crop length in [crop_seconds, crop_max_seconds], 0.5 s grid
    pack: str | None = None  # folder written by `nestspk-train pack` (decoded training list); None: decode here
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class DistillConfig:
    """Optional teacher: per-recording target embeddings (.npy, rows in training-list order)."""

    targets: str | None = None
    weight: float = 0.0  # loss += weight * (1 - cos(projection(embedding), target))


@dataclass
class TrainConfig:
    name: str = "nested_4level"
    model: str = "nested"
    model_options: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    amp: str = "off"  # off | fp16 (with GradScaler) | fp16_noscaler | bf16
    sync_batchnorm: bool = True  # multi-GPU only: BatchNorm -> SyncBatchNorm
    seed: int = 0
    log_every: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


def _build(cls, d: dict | None):
    d = dict(d or {})
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s): {sorted(unknown)}")
    nested = {"data": DataConfig, "optim": OptimConfig, "loss": LossConfig, "augment": AugmentConfig,
              "distill": DistillConfig}
    for k, v in list(d.items()):
        if k in nested and isinstance(v, dict):
            d[k] = _build(nested[k], v)
        elif isinstance(v, list) and k != "model_options":
            d[k] = tuple(v)
    return cls(**d)


def packaged_configs() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("nestspk.configs").iterdir() if p.name.endswith(".yaml"))


def load_config(path_or_name: str) -> TrainConfig:
    """Load a YAML config by path, or by the name of a config shipped in ``nestspk/configs``."""
    p = Path(path_or_name)
    if not p.exists():
        name = p.name[:-5] if p.name.endswith(".yaml") else p.name
        cand = resources.files("nestspk.configs") / f"{name}.yaml"
        if not cand.is_file():
            raise FileNotFoundError(f"config {path_or_name!r} not found (shipped: {packaged_configs()})")
        text = cand.read_text()
    else:
        text = p.read_text()
    return _build(TrainConfig, yaml.safe_load(text))


def apply_overrides(cfg: TrainConfig, assignments: list[str]) -> TrainConfig:
    """Apply ``section.key=value`` strings (value parsed as YAML) to ``cfg`` in place."""
    for a in assignments:
        if "=" not in a:
            raise ValueError(f"override {a!r} is not KEY=VALUE")
        key, raw = a.split("=", 1)
        target = key.split(".")[-1]
        obj = cfg
        for part in key.split(".")[:-1]:
            obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
        value = yaml.safe_load(raw)
        if isinstance(obj, dict):
            obj[target] = value
        elif hasattr(obj, target):
            setattr(obj, target, tuple(value) if isinstance(value, list) else value)
        else:
            raise ValueError(f"unknown config key {key!r}")
    return cfg
