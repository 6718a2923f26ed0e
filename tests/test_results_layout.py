"""benchmarks/results/: one dated folder per run, each listed once in index.csv (current or superseded)."""
from __future__ import annotations

import csv
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_every_run_folder_is_indexed_once() -> None:
    rows = list(csv.DictReader((RESULTS / "index.csv").open()))
    names = [r["run"] for r in rows]
    assert len(names) == len(set(names))
    folders = sorted(p.name for p in RESULTS.iterdir() if p.is_dir())
    assert sorted(names) == folders
    loose = sorted(p.name for p in RESULTS.iterdir() if p.is_file() and p.name != "index.csv")
    assert loose == [], f"loose result files (put them in a dated run folder): {loose}"
    for r in rows:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}(_\d{4})?_[a-z0-9_]+", r["run"]), r["run"]  # date, optional HHMM, topic
        assert r["date"] == r["run"][:10]
        assert r["status"] in ("current", "superseded"), r
        assert (r["superseded_by"] in names) == (r["status"] == "superseded"), r
        assert (RESULTS / r["run"] / "README.md").is_file() or (RESULTS / r["run"] / "RUN.md").is_file()
