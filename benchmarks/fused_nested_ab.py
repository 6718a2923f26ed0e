"""Summarise benchmarks/fused_nested_ab.sh: per workload, nested/baseline and nested p50 with the fused
nested kernel on and off (one value per round). Usage: python benchmarks/fused_nested_ab.py ab_*.json"""
from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict


def main(paths: list[str]) -> None:
    ratio: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    p50: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    env = None
    for path in sorted(paths):
        fused = "on" if re.search(r"fused1\.json$", path) else "off"
        doc = json.load(open(path))
        env = env or doc["environment"]
        for row in doc["rows"]:
            if row["model"] != "nested" or row.get("error"):
                continue
            key = (row["mode"], row["duration_s"], row["batch"])
            ratio[key][fused].append(row["ratio_vs_baseline"])
            p50[key][fused].append(row["p50_ms"])
    print(f"device {env.get('device_name')}, torch {env.get('torch')}, triton {env.get('triton')}, "
          f"git {str(env.get('git_commit'))[:12]}")
    print()
    print("| mode | dur s | batch | nest/base fused on | nest/base fused off | nested p50 ms on | nested p50 ms off |")
    print("|---|---:|---:|---|---|---|---|")
    fmt = lambda xs, d: ", ".join(f"{x:.{d}f}" for x in xs) + (f" (median {statistics.median(xs):.{d}f})" if len(xs) > 1 else "")
    for key in sorted(ratio):
        r, p = ratio[key], p50[key]
        print(f"| {key[0]} | {key[1]:g} | {key[2]} | {fmt(r['on'], 3)} | {fmt(r['off'], 3)} | "
              f"{fmt(p['on'], 3)} | {fmt(p['off'], 3)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
