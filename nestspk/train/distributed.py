"""Multi-process (DistributedDataParallel) training support for :func:`nestspk.train.trainer.train`.

Launch with ``torchrun --nproc_per_node=N -m nestspk.train --config ...`` or
``nestspk-train --gpus N --config ...`` (which re-launches itself through
``torch.distributed.run``). ``train()`` detects the ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK`` environment that torchrun sets and initialises the process group
itself (NCCL on CUDA, gloo on CPU).

Scheme (world size ``W``):

* The global batch stays ``optim.batch_size``; every rank samples
  ``batch_size // W`` random crops with its own on-device ``BatchSampler``.
* Sampling is the analogue of ``DistributedSampler`` for random crops: rank
  ``r`` draws from a generator seeded ``seed + 1000 * r``, and at the start of
  every epoch each rank reseeds its sampler generator *and* its global torch RNG
  (dropout) from ``(seed, epoch, rank)`` via :func:`epoch_seed`. Epoch 1 uses
  exactly ``seed + 1000 * r``. Because the streams are a pure function of
  ``(seed, epoch, rank)``, resuming from ``last.pt`` replays every rank exactly
  without storing per-rank RNG states. This reseeding only happens when
  ``W > 1``; single-process training keeps its original one-stream numerics.
* Encoder and AAM head are wrapped together in one DDP module
  (:class:`JointModel`), so gradients of both are averaged over ranks;
  clipping after ``backward()`` therefore clips the global gradient.
* BatchNorm: converted to ``SyncBatchNorm`` on CUDA; gloo/CPU has no
  SyncBatchNorm, so BN statistics stay per rank there (logged).
* Rank 0 alone logs, writes CSV / TensorBoard / checkpoints and runs the dev
  evaluation; its stop decision is broadcast so all ranks stop together.
* NaN sentinel: a per-rank "bad" flag is all-reduced every step (together with
  the loss and accuracy, so the logged loss is the global-batch mean).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

#: Per-rank seed offset (``seed + RANK_SEED_STRIDE * rank``).
RANK_SEED_STRIDE = 1000
#: Per-epoch seed offset; ranks must stay below RANK_SEED_STRIDE.
EPOCH_SEED_STRIDE = 1_000_003


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment (``(0, 1, 0)`` when absent)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", 0))))


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s sampler generator: ``seed + 1000 * rank``."""
    return seed + RANK_SEED_STRIDE * rank


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed for rank ``rank`` at the start of (1-based) ``epoch``; equals :func:`rank_seed` for epoch 1."""
    return rank_seed(seed, rank) + EPOCH_SEED_STRIDE * (epoch - 1)


def local_batch_size(batch_size: int, world_size: int) -> int:
    """Per-rank batch for a global ``batch_size`` (warns when it does not divide evenly)."""
    local = batch_size // world_size
    if local < 1:
        raise ValueError(f"global batch {batch_size} is smaller than the world size {world_size}")
    if local * world_size != batch_size:
        log.warning("global batch %d is not divisible by world size %d: using %d per rank (global %d)",
                    batch_size, world_size, local, local * world_size)
    return local


@dataclass
class DistContext:
    """This process's place in the (possibly trivial) process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when setup() created the process group (and cleanup() destroys it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_object(self, obj, src: int = 0):
        """Rank ``src``'s ``obj`` on every rank (identity when not distributed)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def reduce_step(self, loss: float, acc: float, bad: bool, loss_bad: bool,
                    device: torch.device) -> tuple[float, float, list[int], list[int]]:
        """One all-reduce per step. Returns the global mean loss and accuracy, the ranks whose step was bad
        (non-finite loss or gradient norm) and, among them, those whose own loss was non-finite."""
        t = torch.zeros(2 + self.world_size, dtype=torch.float64, device=device)
        t[0], t[1], t[2 + self.rank] = loss, acc, 2.0 if loss_bad else float(bad)
        dist.all_reduce(t)
        v = t.tolist()
        flags = v[2:]
        return (v[0] / self.world_size, v[1] / self.world_size, [r for r, f in enumerate(flags) if f > 0],
                [r for r, f in enumerate(flags) if f >= 2])

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is True on any rank."""
        if not self.distributed:
            return flag
        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)


def resolve_device(device: str, ctx: DistContext) -> torch.device:
    """``'auto'``/``'cuda'`` -> ``cuda:LOCAL_RANK`` under DDP; otherwise as the single-process trainer does."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if ctx.distributed and dev.type == "cuda":
        if dev.index is not None and dev.index != ctx.local_rank:
            log.warning("rank %d: ignoring device %s, using cuda:%d (LOCAL_RANK)", ctx.rank, dev, ctx.local_rank)
        dev = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(dev)
    return dev


def setup(device: str, timeout: timedelta | None = None) -> tuple[DistContext, torch.device]:
    """Join (or create, from the torchrun environment) the process group; returns the context and this rank's device.

    ``timeout`` bounds collectives of a group created here (default: torch's).
    """
    if dist.is_available() and dist.is_initialized():
        ctx = DistContext(dist.get_rank(), dist.get_world_size(), env_world()[2])
        return ctx, resolve_device(device, ctx)
    rank, world, local = env_world()
    ctx = DistContext(rank, world, local)
    dev = resolve_device(device, ctx)
    if world > 1:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kw = {"device_id": dev} if dev.type == "cuda" else {}
        if timeout is not None:
            kw["timeout"] = timeout
        dist.init_process_group(backend, rank=rank, world_size=world, **kw)
        ctx.owns_group = True
        log.info("rank %d/%d: process group up (%s), device %s", rank, world, backend, dev)
    return ctx, dev


def cleanup(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()
        ctx.owns_group = False


class JointModel(nn.Module):
    """Encoder + loss head as one module, so a single DDP wrapper averages both modules' gradients."""

    def __init__(self, model: nn.Module, head: nn.Module, distill: nn.Module | None = None):
        super().__init__()
        self.model, self.head, self.distill = model, head, distill

    def forward(self, wav: torch.Tensor, labels: torch.Tensor,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.model(wav)
        loss, acc = self.head(emb, labels)
        if self.distill is not None and targets is not None:
            loss = loss + self.distill(emb, targets)
        return loss, acc


def convert_batchnorm(model: nn.Module, ctx: DistContext, device: torch.device, enabled: bool = True) -> nn.Module:
    """SyncBatchNorm on CUDA when distributed; on CPU (gloo has no SyncBatchNorm) BN stays per rank."""
    if not ctx.distributed or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    if not enabled:
        if ctx.is_main:
            log.info("sync_batchnorm: false -- BatchNorm statistics stay per rank")
        return model
    if device.type == "cuda":
        if ctx.is_main:
            log.info("converting BatchNorm to SyncBatchNorm across %d ranks", ctx.world_size)
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if ctx.is_main:
        log.info("SyncBatchNorm is unsupported on CPU/gloo: BatchNorm statistics stay per rank (local batch)")
    return model


def wrap(model: nn.Module, head: nn.Module, ctx: DistContext, device: torch.device,
         distill: nn.Module | None = None) -> nn.Module:
    """``JointModel(model, head, distill)``, wrapped in DistributedDataParallel when ``ctx`` is distributed."""
    joint = JointModel(model, head, distill)
    if not ctx.distributed:
        return joint
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(joint, device_ids=ids, output_device=device.index if ids else None)


def launch(n_procs: int, argv: list[str]) -> int:
    """Re-run ``python -m nestspk.train ARGV`` as ``n_procs`` processes through torchrun; returns its exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_procs}",
           "-m", "nestspk.train", *argv]
    log.info("launching: %s", " ".join(cmd))
    return subprocess.call(cmd)
