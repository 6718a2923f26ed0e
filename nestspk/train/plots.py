"""Training-report plots from run folders (epochs.csv / steps.csv[.gz]); needs matplotlib.

    python -m nestspk.train.plots --runs weights/runs --out weights
"""
from __future__ import annotations

import argparse
import csv
import gzip
from pathlib import Path


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        path = path.with_name(path.name + ".gz")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return list(csv.DictReader(f))


def plot_runs(runs: Path, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {
        "nested_4level (safe AAM, fp32)": ["nested_4level", "nested_s1", "nested_s2"],
        "ResNetSE34L+ASP (same recipe)": ["resnetse34l_asp", "base_s1", "base_s2"],
        "seed pre-fix (BN, interp., 0.5, fp16, common AAM)": ["nested_seed_prefix", "prefix_long"],
        "seed fixed (GN, pool, sigmoid(w), fp16, common AAM)": ["nested_seed_fixed", "seedfixed_long"],
    }
    colors = ["tab:blue", "tab:red", "tab:green", "tab:orange"]
    fig, ax = plt.subplots(figsize=(9, 5))
    for (label, names), c in zip(groups.items(), colors):
        for i, n in enumerate(names):
            rows = _rows(runs / n / "epochs.csv")
            ax.plot([int(r["epoch"]) for r in rows], [100 * float(r["dev_eer"]) for r in rows], color=c,
                    alpha=0.9 if i == 0 else 0.45, lw=1.5 if i == 0 else 1.0, label=label if i == 0 else None)
    ax.set_xlabel("epoch (100 steps of 48 x 2 s crops)")
    ax.set_ylabel("dev EER (%)")
    ax.set_ylim(0, 40)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Dev EER per epoch (all runs; faint lines = other seeds / longer runs)")
    p1 = out / "training_eer.png"
    fig.tight_layout()
    fig.savefig(p1, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    for n, style in [("nested_4level", "-"), ("nested_seed_fixed", "--")]:
        rows = _rows(runs / n / "steps.csv")
        step = [int(r["step"]) for r in rows]
        axes[0].plot(step, [float(r["grad_norm"]) for r in rows], style, lw=0.8, label=f"{n}: total (before clip)")
        for k in ("2", "3", "4"):
            axes[1].plot(step, [float(r[f"weight/level{k}"]) for r in rows], style, label=f"{n}: level {k}")
            axes[2].plot(step, [float(r[f"act_rms/level{k}"]) for r in rows], style, lw=0.8, label=f"{n}: level {k}")
        for k in ("1", "2", "3"):
            axes[0].plot(step, [float(r[f"grad/levels.{int(k) - 1}"]) for r in rows], style, lw=0.6, alpha=0.6,
                         label=f"{n}: level {k}" if style == "-" else None)
    axes[0].axhline(5.0, color="k", lw=0.8, ls=":", label="clip 5.0")
    axes[0].set_ylabel("gradient norm")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("nested weight sigmoid(w)")
    axes[1].axhspan(0.2, 0.6, color="green", alpha=0.08)
    axes[2].set_ylabel("activation RMS (level output)")
    axes[2].set_xlabel("training step")
    for a in axes:
        a.grid(alpha=0.3)
        a.legend(fontsize=7, ncol=2)
    fig.suptitle("Stability telemetry: nested_4level (solid) vs seed-fixed variant under fp16 (dashed)")
    p2 = out / "training_stability.png"
    fig.tight_layout()
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nestspk.train.plots")
    p.add_argument("--runs", type=Path, default=Path("weights/runs"))
    p.add_argument("--out", type=Path, default=Path("weights"))
    a = p.parse_args(argv)
    for path in plot_runs(a.runs, a.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
