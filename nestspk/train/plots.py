"""Training-report plots from run folders (epochs.csv / steps.csv[.gz]); needs matplotlib.

    python -m nestspk.train.plots weights/runs/2026-12-02_nested_d weights/runs/2026-12-02_resnet_d --out DIR
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


def plot_runs(runs: list[Path], out: Path, telemetry: list[Path] | None = None) -> list[Path]:
    """Dev EER per epoch of every run folder in ``runs``; gradient norms, nested weights and activation RMS of
    ``telemetry`` (default: the first two runs). Writes ``out/training_eer.png`` and ``out/training_stability.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [Path(r) for r in runs]
    if not runs:
        raise ValueError("no run folders given")
    fig, ax = plt.subplots(figsize=(9, 5))
    steps_per_epoch = None
    for run in runs:
        rows = _rows(run / "epochs.csv")
        cfg = run / "config.json"
        if cfg.exists() and steps_per_epoch is None:
            import json

            steps_per_epoch = json.loads(cfg.read_text())["optim"].get("steps_per_epoch")
        ax.plot([int(r["epoch"]) for r in rows], [100 * float(r["dev_eer"]) for r in rows], lw=1.3, marker=".",
                label=run.name)
    ax.set_xlabel(f"epoch ({steps_per_epoch} steps)" if steps_per_epoch else "epoch")
    ax.set_ylabel("dev EER (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Dev EER per epoch")
    p1 = out / "training_eer.png"
    fig.tight_layout()
    fig.savefig(p1, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    for run, style in zip(telemetry or runs[:2], ["-", "--", ":", "-."]):
        rows = _rows(run / "steps.csv")
        step = [int(r["step"]) for r in rows]
        n = run.name
        axes[0].plot(step, [float(r["grad_norm"]) for r in rows], style, lw=0.8, label=f"{n}: total (before clip)")
        for k in ("2", "3", "4"):
            if f"weight/level{k}" in rows[0]:
                axes[1].plot(step, [float(r[f"weight/level{k}"]) for r in rows], style, label=f"{n}: level {k}")
            if f"act_rms/level{k}" in rows[0]:
                axes[2].plot(step, [float(r[f"act_rms/level{k}"]) for r in rows], style, lw=0.8,
                             label=f"{n}: level {k}")
    axes[0].set_ylabel("gradient norm")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("nested weight sigmoid(w)")
    axes[2].set_ylabel("activation RMS (level output)")
    axes[2].set_xlabel("training step")
    for a in axes:
        a.grid(alpha=0.3)
        a.legend(fontsize=7, ncol=2)
    fig.suptitle("Stability telemetry (every 10th step)")
    p2 = out / "training_stability.png"
    fig.tight_layout()
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nestspk.train.plots", description="training-report plots")
    p.add_argument("runs", nargs="+", type=Path, help="run folders (epochs.csv, steps.csv[.gz], config.json)")
    p.add_argument("--out", type=Path, required=True, help="folder for training_eer.png and training_stability.png")
    p.add_argument("--telemetry", nargs="*", type=Path, default=None, help="runs for the telemetry plot")
    a = p.parse_args(argv)
    for path in plot_runs(a.runs, a.out, a.telemetry):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
