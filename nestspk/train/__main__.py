"""``nestspk-train``: train, prepare data lists, or package a run into shipped weights.

    nestspk-train --config nested_4level --out runs/nested_4level [--device cuda] [--max-minutes 8]
    nestspk-train --gpus 2 --config nested_4level ...        (DDP; = torchrun --nproc_per_node 2 -m nestspk.train ...)
    torchrun --nproc_per_node=2 -m nestspk.train --config nested_4level ...
    nestspk-train prepare --root ../shared/data --out weights/lists
    nestspk-train pack --list weights/lists/train.txt --out /tmp/pack     (decode once, int16)
    nestspk-train evaluate runs/nested_4level [--trials weights/lists/test_trials.txt]
    nestspk-train package --run runs/nested_4level --name nested_4level [--weights-dir weights]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s %(levelname)s {f'[rank {rank}] ' if 'RANK' in os.environ else ''}%(message)s")
    if argv and argv[0] == "prepare":
        p = argparse.ArgumentParser(prog="nestspk-train prepare",
                                    description="write train.txt and the dev/test/speechocean trial lists")
        p.add_argument("--root", type=Path, default=None, help="data root (default $NESTSPK_DATA or ../shared/data)")
        p.add_argument("--out", type=Path, default=Path("weights/lists"))
        p.add_argument("--seed", type=int, default=0)
        a = p.parse_args(argv[1:])
        from ..corpus import SplitPlan, default_data_root, prepare_lists
        stats = prepare_lists(a.root or default_data_root(), a.out, SplitPlan(seed=a.seed))
        print(json.dumps(stats))
        return 0
    if argv and argv[0] == "pack":
        p = argparse.ArgumentParser(prog="nestspk-train pack", description="decode a training list once (int16)")
        p.add_argument("--list", type=Path, default=Path("weights/lists/train.txt"))
        p.add_argument("--root", type=Path, default=None)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--workers", type=int, default=None)
        a = p.parse_args(argv[1:])
        from ..corpus import default_data_root
        from .data import write_pack
        print(json.dumps(write_pack(a.list, a.root or default_data_root(), a.out, a.workers)))
        return 0
    if argv and argv[0] == "evaluate":
        p = argparse.ArgumentParser(prog="nestspk-train evaluate")
        p.add_argument("runs", nargs="+", type=Path, help="run folders holding config.json and best.pt")
        p.add_argument("--trials", type=Path, default=Path("weights/lists/test_trials.txt"))
        p.add_argument("--root", type=Path, default=None)
        a = p.parse_args(argv[1:])
        from .package import evaluate_run
        for run in a.runs:
            print(json.dumps({"run": str(run), "trials": str(a.trials), **evaluate_run(run, a.trials, a.root)}))
        return 0
    if argv and argv[0] == "package":
        p = argparse.ArgumentParser(prog="nestspk-train package")
        p.add_argument("--run", type=Path, required=True)
        p.add_argument("--name", required=True)
        p.add_argument("--weights-dir", type=Path, default=Path("weights"))
        p.add_argument("--test-trials", type=Path, default=Path("weights/lists/test_trials.txt"))
        a = p.parse_args(argv[1:])
        from .package import package_run
        card = package_run(a.run, a.name, a.weights_dir, a.test_trials)
        print(json.dumps(card.to_dict(), indent=1))
        return 0
    p = argparse.ArgumentParser(prog="nestspk-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML path or shipped config name")
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<name>)")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-minutes", type=float, default=None, help="pause (resumably) after this many minutes")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed (run name gets _seedN)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.patience=1000 (repeatable)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--gpus", type=int, default=None,
                   help="train data-parallel on N processes: re-launches itself through torchrun "
                        "(--nproc_per_node N); under torchrun the world size comes from the environment")
    a = p.parse_args(argv)
    if a.gpus is not None and a.gpus > 1 and "WORLD_SIZE" not in os.environ:
        from .distributed import launch
        return launch(a.gpus, _strip_option(argv, "--gpus"))
    from .config import apply_overrides, load_config
    from .trainer import TrainingDiverged, train
    cfg = apply_overrides(load_config(a.config), a.set)
    if a.seed is not None:
        cfg.seed, cfg.name = a.seed, f"{cfg.name}_seed{a.seed}"
    out = a.out or Path("runs") / cfg.name
    try:
        summary = train(cfg, out, a.device, a.max_minutes, progress=not a.no_progress)
    except TrainingDiverged as e:
        logging.error("%s", e)
        return 3
    if rank == 0:
        print(json.dumps(summary))
    return 0


def _strip_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out, skip = [], False
    for x in argv:
        if skip:
            skip = False
        elif x == name:
            skip = True
        elif not x.startswith(name + "="):
            out.append(x)
    return out


if __name__ == "__main__":
    sys.exit(main())
