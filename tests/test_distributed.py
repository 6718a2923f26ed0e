"""DDP training on CPU (gloo, 2 spawned processes) against the single-process trainer.

Spawning processes is the slow part (torch and DDP's imports take seconds), so one
module-scoped session spawns the 2 ranks once; they join one gloo group and run every
distributed phase below in turn, writing results that the tests then check.

(a) ``test_ddp_gradients_are_the_average``: with one fixed batch split in halves across
    2 ranks, one trainer-style step (backward, clip, Adam) gives the same parameters as
    1 process on the full batch (within 1e-5). The nested smoke model has BatchNorm
    (stem, SE blocks, fusion, ASP), whose training-mode batch statistics would differ
    between a 4-crop and an 8-crop batch; the model is therefore put in ``eval()`` mode
    (BN uses its running statistics, dropout is off), which makes the forward pass
    per-sample so the only difference left is the gradient reduction under test.
    The update is checked with SGD: Adam's first step is ~lr * sign(g), which turns
    rounding-level differences of near-zero gradients into lr-sized ones; the averaged
    gradients themselves are compared directly (they are what Adam receives).
(b) ``test_ddp_training_end_to_end``: the real ``train()`` on 2 gloo ranks: rank 0
    alone writes checkpoints/CSV (rank 1 gets its own, untouched, out dir), the loss
    trajectory is finite and of the same size as the 1-process run with the same
    global batch, resuming a 2-rank run (same out dir) replays the uninterrupted run exactly, and a NaN
    injected on rank 1 only (``NESTSPK_DEBUG_NAN_STEP`` / ``NESTSPK_DEBUG_NAN_RANK``)
    stops both ranks in the same step, with rank 0 writing the diagnosis.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import socket
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from nestspk.train import distributed as ddp

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NESTSPK_DATA", str(REPO.parent / "shared" / "data")))
LISTS = REPO / "weights" / "lists"
WORLD = 2
TINY = ["data.crop_seconds=1.0", "optim.batch_size=8", "optim.steps_per_epoch=2", "optim.epochs=2",
        "optim.patience=100", "data.augment.noise_prob=0.0", "data.augment.babble_prob=0.0",
        "data.augment.reverb_prob=0.0", "data.augment.speeds=[1.0]", "log_every=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- helpers shared by parent and ranks

def _tiny_model_and_batch():
    from nestspk.models import build_model
    from nestspk.train.loss import AAMSoftmax

    torch.manual_seed(0)
    model = build_model("nested", {"channels": [8, 16, 16, 32], "blocks": [1, 1, 1, 1], "fusion_dim": 32, "embed_dim": 64})
    head = AAMSoftmax(64, 10)
    g = torch.Generator().manual_seed(123)
    wav = torch.randn(8, 16000, generator=g)
    labels = torch.randint(0, 10, (8,), generator=g)
    model.eval()  # BN on running stats, no dropout: a per-sample forward (see module docstring)
    head.eval()
    return model, head, wav, labels


def _one_step(net, params, wav, labels) -> list[torch.Tensor]:
    """The trainer's update order (backward, clip to 5, step) with SGD. Returns the gradients used."""
    opt = torch.optim.SGD(params, lr=0.05)
    loss, _ = net(wav, labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 5.0)
    grads = [p.grad.detach().clone() for p in params]
    opt.step()
    return grads


def _tiny_cfg(tmp: Path, extra: list[str] = ()):
    from nestspk.train.config import apply_overrides, load_config

    train, dev = tmp / "train.txt", tmp / "dev_trials.txt"
    if not dev.exists():  # every 4th recording / 24th dev trial (both labels): short data loading and dev evaluation
        train.write_text("\n".join((LISTS / "train.txt").read_text().splitlines()[::4]) + "\n")
        dev.write_text("\n".join((LISTS / "dev_trials.txt").read_text().splitlines()[::24]) + "\n")
    return apply_overrides(load_config("smoke"), [*TINY, f"data.train_manifest={train}",
                                                  f"data.dev_trials={dev}", f"data.root={DATA}", *extra])


def _steps(path: Path) -> list[dict]:
    with open(path / "steps.csv") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- the spawned ranks

def _rank_main(rank: int, port: int, tmp_s: str) -> None:
    """One rank: join the group from the torchrun-style environment, then run every phase."""
    from nestspk.train.trainer import TrainingDiverged, train

    tmp = Path(tmp_s)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    res: dict = {}
    ctx, dev = ddp.setup("cpu", timeout=timedelta(seconds=90))
    try:
        res["ctx"] = [ctx.rank, ctx.world_size, ctx.owns_group]
        # (a) one step on this rank's half of a fixed batch
        model, head, wav, labels = _tiny_model_and_batch()
        net = ddp.wrap(model, head, ctx, dev)
        res["is_ddp"] = isinstance(net, torch.nn.parallel.DistributedDataParallel)
        local = ddp.local_batch_size(len(wav), ctx.world_size)
        params = list(model.parameters()) + list(head.parameters())
        grads = _one_step(net, params, wav[rank * local:(rank + 1) * local], labels[rank * local:(rank + 1) * local])
        torch.save({"params": [p.detach() for p in params], "grads": grads}, tmp / f"grad_rank{rank}.pt")

        # (b) train(): A = fresh 2-epoch run, rank 1 pointed at its own out dir; B = epoch 1 only, then
        # resumed to 2 epochs with a NaN injected on rank 1 at global step 4 (2nd step of the resumed epoch)
        def run(name: str, out: Path, extra: list[str] = ()) -> None:
            try:
                res[name] = {"summary": train(_tiny_cfg(tmp, extra), out, device="cpu", progress=False)}
            except TrainingDiverged as e:
                res[name] = {"diverged": str(e)}

        run("A", tmp / ("ddp" if rank == 0 else "ddp_rank1"))
        run("B1", tmp / "resumed", ["optim.epochs=1"])
        os.environ.update(NESTSPK_DEBUG_NAN_STEP="4", NESTSPK_DEBUG_NAN_RANK="1")
        run("B2", tmp / "resumed")
    except Exception:  # reported by the parent
        res["error"] = traceback.format_exc()
    finally:
        (tmp / f"result{rank}.json").write_text(json.dumps(res))
        ddp.cleanup(ctx)


@pytest.fixture
def one_thread():
    """Like the ranks: one intra-op thread (2 CPU cores); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> tuple[Path, list[dict]]:
    from conftest import training_lists_available

    if not training_lists_available():
        pytest.skip("training data not available")
    tmp = tmp_path_factory.mktemp("ddp")
    torch.multiprocessing.start_processes(_rank_main, args=(_free_port(), str(tmp)), nprocs=WORLD, join=True,
                                          start_method="spawn")
    res = [json.loads((tmp / f"result{r}.json").read_text()) for r in range(WORLD)]
    for r in res:
        assert "error" not in r, r["error"]
    return tmp, res


# ---------------------------------------------------------------- (a) gradient averaging

def test_ddp_gradients_are_the_average(session, one_thread) -> None:
    tmp, res = session
    assert [r["ctx"] for r in res] == [[0, WORLD, True], [1, WORLD, True]] and all(r["is_ddp"] for r in res)
    model, head, wav, labels = _tiny_model_and_batch()
    params = list(model.parameters()) + list(head.parameters())
    ref_grads = _one_step(ddp.JointModel(model, head), params, wav, labels)
    for rank in range(WORLD):
        got = torch.load(tmp / f"grad_rank{rank}.pt")
        for g, want in zip(got["grads"], ref_grads):
            torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-6)
        worst = max((a - b).abs().max().item() for a, b in zip(got["params"], params))
        logger.info("rank %d: max |param(2 ranks) - param(1 process)| after one step: %.2e", rank, worst)
        assert worst < 1e-5
    # sensitivity: a rank stepping on its half batch alone (no averaging) lands elsewhere
    model2, head2, _, _ = _tiny_model_and_batch()
    half = _one_step(ddp.JointModel(model2, head2), list(model2.parameters()) + list(head2.parameters()),
                     wav[:4], labels[:4])
    assert max((a - b).abs().max().item() for a, b in zip(half, ref_grads)) > 1e-3


def test_local_batch_and_seeds() -> None:
    assert ddp.local_batch_size(48, 2) == 24
    assert ddp.local_batch_size(8, 3) == 2  # warns: global batch becomes 6
    with pytest.raises(ValueError):
        ddp.local_batch_size(1, 2)
    assert ddp.rank_seed(7, 1) == 1007
    assert ddp.epoch_seed(7, 1, 1) == ddp.rank_seed(7, 1)
    assert len({ddp.epoch_seed(0, e, r) for e in range(1, 50) for r in range(8)}) == 49 * 8


def test_gpus_flag_is_stripped_for_relaunch() -> None:
    from nestspk.train.__main__ import _strip_option

    assert _strip_option(["--gpus", "2", "--config", "x", "--gpus=3"], "--gpus") == ["--config", "x"]


# ---------------------------------------------------------------- (b) end-to-end train()

def test_ddp_training_end_to_end(session, tmp_path: Path, one_thread) -> None:
    from nestspk.train.trainer import train

    tmp, res = session
    single = train(_tiny_cfg(tmp_path), tmp_path / "single", device="cpu", progress=False)  # 1 process, batch 8
    s_steps = _steps(tmp_path / "single")
    a0, a1 = tmp / "ddp", tmp / "ddp_rank1"
    assert res[0]["A"] == res[1]["A"]  # rank 0's state and stop decision reached rank 1
    assert res[0]["A"]["summary"]["status"] == single["status"] == "finished"
    assert res[0]["A"]["summary"]["steps"] == single["steps"] == 4
    for f in ("last.pt", "best.pt", "steps.csv", "epochs.csv", "summary.json", "config.json"):
        assert (a0 / f).is_file(), f
    assert not a1.exists()  # rank 1 wrote nothing
    d_steps = _steps(a0)
    assert len(d_steps) == len(s_steps) == 4
    d_loss, s_loss = [float(r["loss"]) for r in d_steps], [float(r["loss"]) for r in s_steps]
    logger.info("loss per step, 1 process: %s; 2 ranks: %s", s_loss, d_loss)
    assert all(math.isfinite(v) for v in d_loss)
    # same initial model, different crops: the first global-batch losses are of the same size
    assert abs(d_loss[0] - s_loss[0]) < 0.5 * s_loss[0]
    ck = torch.load(a0 / "last.pt", weights_only=True)
    ref = torch.load(tmp_path / "single" / "last.pt", weights_only=True)
    assert list(ck["model"]) == list(ref["model"])  # DDP checkpoints load into the single-process model


def test_ddp_resume_is_exact(session) -> None:
    tmp, res = session
    assert res[0]["B1"]["summary"]["epochs"] == 1
    # per-epoch reseeding from (seed, epoch, rank): the resumed epoch replays the uninterrupted run
    assert _steps(tmp / "resumed")[:3] == _steps(tmp / "ddp")[:3]


def test_ddp_sentinel_stops_all_ranks(session) -> None:
    tmp, res = session
    b = tmp / "resumed"
    assert "diverged" in res[0]["B2"] and "diverged" in res[1]["B2"]  # both ranks stopped, in the same step
    report = json.loads((b / "diverged.json").read_text())
    assert report["step"] == 4 and report["world_size"] == WORLD
    assert report["nonfinite_loss_ranks"] == [1]  # the culprit
    assert report["bad_ranks"] == [0, 1]  # the averaged gradient is NaN everywhere
    assert math.isfinite(report["rank0_loss"]) and not math.isfinite(report["loss"])
    assert json.loads((b / "summary.json").read_text())["status"] == "diverged"
    assert (b / "nan_batch.pt").is_file() and (b / "nan_batch_rank1.pt").is_file()
    assert len(_steps(b)) == 3  # step 4 was never logged or applied
