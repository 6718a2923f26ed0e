"""Split the files a device training call needs into shards that each fit one call's carry.

The device tool carries at most 64 MiB per call, the repository included, so the corpus goes up in shards
(``benchmarks/device_retrain.sh stage .stage/sN``, one call each, back to back). Every file named by the given
lists (training lists: ``SPEAKER PATH``; trial lists: ``LABEL PATH PATH``) and every file under the extra folders is
copied, with its path relative to the data root, into ``OUT/s0``, ``OUT/s1``, ... of at most ``--shard-mb`` each.

    python benchmarks/stage_shards.py --lists weights/lists/train.txt weights/lists/dev_trials.txt \
        --folders noise --out .stage --shard-mb 44
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nestspk.corpus import default_data_root, read_train_list, read_trials, split_segment  # noqa: E402


def needed_files(lists: list[Path], folders: list[str], root: Path) -> list[str]:
    """Relative paths of every file the lists and folders name, sorted and without repeats."""
    names: set[str] = set()
    for lst in lists:
        first = lst.read_text(encoding="utf-8").split("\n", 1)[0].split()
        if first and first[0] in ("0", "1") and len(first) >= 3:
            for _, enroll, test in read_trials(lst):
                names.update((split_segment(enroll)[0], split_segment(test)[0]))
        else:
            names.update(path for _, path in read_train_list(lst))
    for folder in folders:
        for p in (root / folder).rglob("*"):
            if p.is_file():
                names.add(p.relative_to(root).as_posix())
    return sorted(names)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lists", nargs="+", type=Path, required=True)
    ap.add_argument("--folders", nargs="*", default=[])
    ap.add_argument("--root", type=Path, default=None, help="data root (default: NESTSPK_DATA or ../shared/data)")
    ap.add_argument("--out", type=Path, default=Path(".stage"))
    ap.add_argument("--shard-mb", type=float, default=44.0)
    a = ap.parse_args(argv)
    root = a.root or default_data_root()
    files = needed_files(a.lists, a.folders, root)
    limit = a.shard_mb * 1e6
    shard, used, sizes = 0, 0.0, [0.0]
    for rel in files:
        size = (root / rel).stat().st_size
        if used and used + size > limit:
            shard, used = shard + 1, 0.0
            sizes.append(0.0)
        dst = a.out / f"s{shard}" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, dst)
        used += size
        sizes[-1] = used
    for i, s in enumerate(sizes):
        print(f"{a.out}/s{i}: {s / 1e6:.1f} MB")
    print(f"{len(files)} files, {sum(sizes) / 1e6:.1f} MB in {len(sizes)} shards")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
