"""Training loop with stability telemetry, a NaN/inf sentinel, checkpoints and resume."""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ..errors import NestspkError
from ..evaluation import load_trial_segments, score_trials
from ..models import SpeakerModel, count_parameters
from ..runtime.torch_runtime import TorchEmbedder
from . import distributed as ddp
from .config import TrainConfig
from ..corpus import AUDIO_SUFFIXES, default_data_root, read_train_list
from .data import BatchSampler, WaveformBank
from .loss import AAMSoftmax, DistillLoss
from .seed_variants import build_training_model
from .telemetry import ActivationTelemetry

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Raised by the sentinel when the loss or gradients become NaN/inf."""


def param_group_name(name: str) -> str:
    """'encoder.levels.2.0.conv1.weight' -> 'levels.2'; 'encoder.fc.weight' -> 'fc'; loss head -> 'aam'."""
    parts = name.split(".")
    if parts[0] != "encoder":
        return "aam" if parts[0] == "head" else parts[0]
    parts = parts[1:]
    if len(parts) > 1 and (parts[1].isdigit() or parts[0] in ("nested", "nested_w")):
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


class DevSet:
    """A dev trial list, its segments loaded once (CPU), scored through :func:`nestspk.evaluation.score_trials`."""

    def __init__(self, trials_path: Path, root: Path):
        self.segments = load_trial_segments(trials_path, root)

    @torch.no_grad()
    def evaluate(self, model: SpeakerModel, device: torch.device) -> dict:
        """EER, its threshold and minDCF (0.01, 0.05) of ``model`` (left in eval mode); NaN when it diverged."""
        # every dev utterance has its own length: cuDNN autotuning each one cost ~4 min per run's first epoch
        bench, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False
        try:
            embedder = TorchEmbedder.from_model(model, device=str(device))
            try:
                m = score_trials(embedder, self.segments, batch_size=64).metrics()
            except NestspkError as e:  # a non-finite embedding: the run diverged
                log.warning("dev evaluation: %s", e)
                return {"eer": float("nan"), "min_dcf_0.01": float("nan"), "min_dcf_0.05": float("nan"),
                        "threshold": float("nan")}
            return {"eer": m["eer"], "threshold": m["eer_threshold"], "min_dcf_0.01": m["min_dcf_0.01"],
                    "min_dcf_0.05": m["min_dcf_0.05"]}
        finally:
            torch.backends.cudnn.benchmark = bench


class CsvLog:
    def __init__(self, path: Path):
        self.path, self.fields = path, None

    def write(self, row: dict) -> None:
        new = not self.path.exists()
        if self.fields is None:
            if not new:
                with open(self.path) as f:
                    self.fields = next(csv.reader(f))
            else:
                self.fields = list(row)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: TrainConfig, out_dir: str | Path, device: str = "auto", max_minutes: float | None = None,
          progress: bool = True) -> dict:
    """Train (or resume) ``cfg`` into ``out_dir``. Returns the summary dict also written to summary.json.

    Stops at ``optim.epochs``, on patience, or (resumably) after ``max_minutes``.
    Raises :class:`TrainingDiverged` when the sentinel fires (after saving the batch).

    Under torchrun (``WORLD_SIZE`` > 1) this trains with DistributedDataParallel:
    see :mod:`nestspk.train.distributed`. Only rank 0 writes to ``out_dir``; every
    rank returns the same summary.
    """
    ctx, dev = ddp.setup(device)
    try:
        return _train(cfg, Path(out_dir), dev, ctx, max_minutes, progress)
    finally:
        ddp.cleanup(ctx)


def _train(cfg: TrainConfig, out: Path, dev: torch.device, ctx: ddp.DistContext, max_minutes: float | None,
           progress: bool) -> dict:
    main = ctx.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
    _seed_everything(cfg.seed)
    torch.backends.cudnn.benchmark = True
    root = Path(cfg.data.root) if cfg.data.root else default_data_root()
    t_start = time.time()

    train_list = read_train_list(cfg.data.train_manifest)
    bank = WaveformBank(train_list, root, dev, pack=cfg.data.pack)
    aug = cfg.data.augment
    noise = None
    if aug.real_noise_dir and aug.real_noise_prob > 0:
        files = sorted(p for p in (root / aug.real_noise_dir).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        noise = WaveformBank([("noise", p.relative_to(root).as_posix()) for p in files], root, dev)
    sampler = BatchSampler(bank, cfg.data.crop_seconds, aug, ddp.rank_seed(cfg.seed, ctx.rank),
                           crop_max_s=cfg.data.crop_max_seconds, noise=noise)
    devset = DevSet(Path(cfg.data.dev_trials), root) if main else None
    model = build_training_model(cfg.model, cfg.model_options).to(dev)
    head = AAMSoftmax(model.embed_dim, bank.n_classes, cfg.loss.margin, cfg.loss.scale, cfg.loss.safe).to(dev)
    targets, distill = None, None
    if cfg.distill.targets and cfg.distill.weight > 0:
        targets = torch.from_numpy(np.load(cfg.distill.targets).astype(np.float32)).to(dev)
        if targets.shape[0] != len(train_list):
            raise ValueError(f"{cfg.distill.targets}: {targets.shape[0]} rows for {len(train_list)} recordings")
        distill = DistillLoss(model.embed_dim, targets.shape[1], cfg.distill.weight).to(dev)
    model = ddp.convert_batchnorm(model, ctx, dev, cfg.sync_batchnorm)
    net = ddp.wrap(model, head, ctx, dev, distill)  # DDP(model + heads) when distributed; same parameter objects
    batch_size = ddp.local_batch_size(cfg.optim.batch_size, ctx.world_size)
    inject_nan = _nan_injection(ctx.rank)
    params = list(model.parameters()) + list(head.parameters()) + (list(distill.parameters()) if distill else [])
    opt = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    o = cfg.optim
    sched = torch.optim.lr_scheduler.LambdaLR(  # stepped every training step
        opt, lambda k: min(1.0, (k + 1) / o.warmup_steps if o.warmup_steps else 1.0) * o.lr_decay ** (k / o.steps_per_epoch))
    # fp16: autocast + GradScaler (skips steps with inf/NaN gradients); fp16_noscaler: autocast without it,
    # as many hand-written loops do -- kept to test the NaN mechanism described in weights/TRAINING.md
    amp_dtype = {"off": None, "fp16": torch.float16, "fp16_noscaler": torch.float16, "bf16": torch.bfloat16}[cfg.amp]
    scaler = torch.amp.GradScaler(dev.type, enabled=cfg.amp == "fp16")
    named = [(n, p) for n, p in model.named_parameters()] + [("head." + n, p) for n, p in head.named_parameters()]
    groups = sorted({param_group_name(n) for n, _ in named})

    state = {"epoch": 0, "step": 0, "best_eer": math.inf, "best_epoch": 0, "bad_epochs": 0, "history": []}
    ckpt_path = out / "last.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=dev, weights_only=True)
        model.load_state_dict(ck["model"])
        head.load_state_dict(ck["head"])
        if distill is not None:
            distill.load_state_dict(ck["distill"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        sampler.load_state(ck["sampler_rng"].to(sampler.g.get_state().device))
        torch.set_rng_state(ck["torch_rng"].cpu())
        state = json.loads(ck["state"])
        if main:
            log.info("resumed %s at epoch %d (best dev EER %.2f%%)", cfg.name, state["epoch"], 100 * state["best_eer"])
    writer = None
    if main:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        try:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(out / "tb"))
        except Exception:  # tensorboard is an optional extra
            log.info("tensorboard not installed; telemetry goes to CSV only")
    step_log, epoch_log = CsvLog(out / "steps.csv"), CsvLog(out / "epochs.csv")
    is_nested = hasattr(model.encoder, "nested")
    telemetry = ActivationTelemetry(model.encoder) if is_nested else None
    n_params = count_parameters(model)
    if main:
        log.info("%s: %s, %d parameters, %d classes, device %s", cfg.name, cfg.model, n_params, bank.n_classes, dev)
        if ctx.distributed:
            log.info("DDP: %d ranks x %d crops = global batch %d", ctx.world_size, batch_size, batch_size * ctx.world_size)

    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    status: str | None = None  # None: keep training
    while state["epoch"] < cfg.optim.epochs:
        epoch = state["epoch"] + 1
        if ctx.distributed:  # per-rank streams are a pure function of (seed, epoch, rank): exact resume
            s = ddp.epoch_seed(cfg.seed, epoch, ctx.rank)
            sampler.g.manual_seed(s)
            torch.manual_seed(s)
        model.train()
        head.train()
        losses, accs, t0 = [], [], time.time()
        steps = range(cfg.optim.steps_per_epoch)
        bar = tqdm(steps, desc=f"{cfg.name} ep{epoch}", leave=False, disable=not (progress and main)) if tqdm else steps
        for _ in bar:
            state["step"] += 1
            record = state["step"] % cfg.log_every == 0
            if telemetry is not None:
                telemetry.enabled = record
            wav, labels, rec = sampler.sample(batch_size)
            with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss, acc = net(wav, labels, None if targets is None else targets[rec])
            if inject_nan is not None and state["step"] == inject_nan:
                loss = loss * float("nan")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            total = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            loss_v, total_v = loss.item(), total.item()
            bad = not math.isfinite(loss_v) or (not math.isfinite(total_v) and cfg.amp != "fp16")
            acc_v = acc.item()
            if ctx.distributed:  # one all-reduce: global loss/acc and which ranks went non-finite
                local_loss = loss_v
                loss_v, acc_v, bad_ranks, loss_ranks = ctx.reduce_step(loss_v, acc_v, bad, not math.isfinite(loss_v), dev)
                if bad_ranks:
                    _dist_sentinel(ctx, out, cfg, state, epoch, wav, labels, named, loss_v, local_loss, total_v,
                                   model, bad_ranks, loss_ranks)
            elif bad:
                _sentinel(out, cfg, state, epoch, wav, labels, named, loss_v, total_v, model)
            scaler.step(opt)  # with fp16 the scaler skips steps whose gradients are inf/NaN
            scaler.update()
            sched.step()
            losses.append(loss_v)
            accs.append(acc_v)
            if record and main:
                row = {"epoch": epoch, "step": state["step"], "loss": loss_v, "acc": acc_v,
                       "lr": opt.param_groups[0]["lr"], "grad_norm": total_v,
                       "amp_scale": scaler.get_scale() if cfg.amp == "fp16" else 1.0}
                row.update(_group_norms(named, groups))
                if is_nested:
                    for k in model.encoder.nested:
                        row[f"weight/level{k}"] = model.encoder.nested_weight_value(int(k))
                    row.update(telemetry.read())
                step_log.write(row)
                if writer:
                    for k, v in row.items():
                        if k not in ("epoch", "step"):
                            writer.add_scalar(k if "/" in k else f"train/{k}", v, state["step"])
        train_seconds = time.time() - t0
        if ctx.any(not all(torch.isfinite(p).all() for p in params), dev):
            if ctx.distributed:
                _dist_sentinel(ctx, out, cfg, state, epoch, wav, labels, named, float("nan"), float("nan"),
                               float("nan"), model, [], [])
            _sentinel(out, cfg, state, epoch, wav, labels, named, float("nan"), float("nan"), model)
        if main:  # dev evaluation, telemetry, checkpoints and the stop decision happen on rank 0 only
            metrics = devset.evaluate(model, dev)
            state["epoch"] = epoch
            improved = metrics["eer"] < state["best_eer"]
            if improved:
                state.update(best_eer=metrics["eer"], best_epoch=epoch, bad_epochs=0, best_metrics=metrics)
                torch.save({"model": model.state_dict()}, out / "best.pt")
            else:
                state["bad_epochs"] += 1
            erow = {"epoch": epoch, "loss": float(np.mean(losses)), "acc": float(np.mean(accs)),
                    "lr": opt.param_groups[0]["lr"], "dev_eer": metrics["eer"],
                    "dev_min_dcf_0.01": metrics["min_dcf_0.01"], "dev_min_dcf_0.05": metrics["min_dcf_0.05"],
                    "seconds": time.time() - t0, "train_seconds": train_seconds,
                    "crops_per_s": len(losses) * batch_size * ctx.world_size / max(train_seconds, 1e-9)}
            if is_nested:
                for k in model.encoder.nested:
                    erow[f"weight/level{k}"] = model.encoder.nested_weight_value(int(k))
            epoch_log.write(erow)
            state["history"].append({"epoch": epoch, "dev_eer": metrics["eer"], "loss": erow["loss"]})
            if writer:
                writer.add_scalar("dev/eer", metrics["eer"], epoch)
                writer.add_scalar("dev/min_dcf_0.01", metrics["min_dcf_0.01"], epoch)
            log.info("%s epoch %d loss %.3f acc %.1f%% dev EER %.2f%% minDCF0.01 %.3f (%.1fs)", cfg.name, epoch,
                     erow["loss"], erow["acc"], 100 * metrics["eer"], metrics["min_dcf_0.01"], erow["seconds"])
            torch.save({"model": model.state_dict(), "head": head.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "sampler_rng": sampler.state(),
                        **({"distill": distill.state_dict()} if distill is not None else {}),
                        "torch_rng": torch.get_rng_state(), "state": json.dumps(state)}, out / "last.tmp")
            (out / "last.tmp").replace(ckpt_path)
            if state["bad_epochs"] >= cfg.optim.patience:
                status = "early_stopped"
            elif max_minutes is not None and (time.time() - t_start) / 60 > max_minutes and state["epoch"] < cfg.optim.epochs:
                status = "paused"
        # other ranks wait here for rank 0; its state and stop decision reach every rank, so all stop together
        state, status = ctx.broadcast_object((state, status))
        if status is not None:
            break
    status = status or "finished"
    summary = {"name": cfg.name, "model": cfg.model, "status": status, "epochs": state["epoch"], "steps": state["step"],
               "best_epoch": state["best_epoch"], "best_dev": state.get("best_metrics"), "parameters": n_params,
               "train_speakers": bank.n_classes, "nan_events": 0}
    if main:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if writer:
        writer.close()
    ctx.barrier()
    return summary


def _group_norms(named, groups) -> dict:
    sq = defaultdict(float)
    for n, p in named:
        if p.grad is not None:
            sq[param_group_name(n)] += p.grad.detach().float().pow(2).sum().item()
    return {f"grad/{g}": math.sqrt(sq[g]) for g in groups}


def _nan_injection(rank: int) -> int | None:
    """Test hook: ``NESTSPK_DEBUG_NAN_STEP=N`` makes the loss NaN at global step N (on every rank, or only on
    ``NESTSPK_DEBUG_NAN_RANK``). Returns the step for this rank, or None (the normal case)."""
    step = os.environ.get("NESTSPK_DEBUG_NAN_STEP")
    only = os.environ.get("NESTSPK_DEBUG_NAN_RANK")
    if not step or (only not in (None, "") and int(only) != rank):
        return None
    log.warning("rank %d: NESTSPK_DEBUG_NAN_STEP=%s: the loss will be NaN at that step", rank, step)
    return int(step)


def _dist_sentinel(ctx: ddp.DistContext, out: Path, cfg: TrainConfig, state: dict, epoch: int, wav, labels, named,
                   loss_v: float, local_loss: float, total_v: float, model, bad_ranks: list[int],
                   loss_ranks: list[int]):
    """Distributed sentinel, reached by every rank in the same step (the 'bad' flag is all-reduced).

    ``bad_ranks``: ranks with a non-finite loss or (DDP-averaged, so then all) gradient norm;
    ``loss_ranks``: those whose own loss was non-finite, i.e. where the bad batch is.
    Rank 0 writes the diagnosis and its batch (``nan_batch.pt``); a non-zero rank in ``loss_ranks``
    also saves its batch as ``nan_batch_rank{r}.pt``. All ranks then meet at a barrier (so torchrun
    does not kill rank 0 mid-write) and raise :class:`TrainingDiverged` together.
    """
    msg = (f"{cfg.name}: rank {ctx.rank}: stopping, non-finite loss/gradient at step {state['step']} "
           f"(bad ranks {bad_ranks}, non-finite loss on {loss_ranks})")
    if ctx.is_main:
        msg = _write_diagnosis(out, cfg, state, epoch, wav, labels, named, loss_v, total_v, model,
                               {"world_size": ctx.world_size, "bad_ranks": bad_ranks, "nonfinite_loss_ranks": loss_ranks,
                                "rank0_loss": local_loss})
    elif ctx.rank in loss_ranks:
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"wav": wav.detach().cpu(), "labels": labels.detach().cpu(), "loss": local_loss},
                   out / f"nan_batch_rank{ctx.rank}.pt")
    ctx.barrier()
    raise TrainingDiverged(msg)


def _sentinel(out: Path, cfg: TrainConfig, state: dict, epoch: int, wav, labels, named, loss_v, total_v, model):
    """Save the offending batch and a diagnosis, then stop. last.pt still holds the last good epoch."""
    raise TrainingDiverged(_write_diagnosis(out, cfg, state, epoch, wav, labels, named, loss_v, total_v, model))


def _write_diagnosis(out: Path, cfg: TrainConfig, state: dict, epoch: int, wav, labels, named, loss_v, total_v, model,
                     extra: dict | None = None) -> str:
    """Write nan_batch.pt, diverged.json and summary.json; returns the error message."""
    torch.save({"wav": wav.detach().cpu(), "labels": labels.detach().cpu()}, out / "nan_batch.pt")
    bad = [n for n, p in named if p.grad is not None and not torch.isfinite(p.grad).all()]
    bad_params = [n for n, p in named if not torch.isfinite(p).all()]
    report = {"name": cfg.name, "epoch": epoch, "step": state["step"], "loss": loss_v, "grad_norm": total_v,
              "nonfinite_grads": bad[:50], "n_nonfinite_grads": len(bad), "nonfinite_params": bad_params[:50],
              "grad_norms": _group_norms(named, sorted({param_group_name(n) for n, _ in named}))}
    report.update(extra or {})
    (out / "diverged.json").write_text(json.dumps(report, indent=1, default=str))
    summary = {"name": cfg.name, "model": cfg.model, "status": "diverged", "epochs": epoch - 1, "steps": state["step"],
               "best_epoch": state["best_epoch"], "best_dev": state.get("best_metrics"), "nan_events": 1,
               "diverged_at": {"epoch": epoch, "step": state["step"]}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return (f"{cfg.name}: non-finite loss/gradient at epoch {epoch}, step {state['step']} (loss={loss_v}, grad norm={total_v}); "
            f"batch saved to {out / 'nan_batch.pt'}, diagnosis in {out / 'diverged.json'}, last good checkpoint {out / 'last.pt'}")
