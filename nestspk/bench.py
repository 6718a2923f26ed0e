"""``nestspk-bench``: a thin entry point for the benchmark harness of a source checkout.

The harness (peers, paired sweep, targets) is benchmark code and lives outside the package, in
``benchmarks/bench.py`` of the repository; this finds it (``$NESTSPK_BENCHMARKS`` names the
``benchmarks`` folder, else the one beside this package) and runs its ``main``. Equivalent:
``python -m benchmarks.bench`` from the repository root.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Sequence


def find_benchmarks() -> Path:
    """The ``benchmarks`` folder holding ``bench.py``; raises FileNotFoundError naming where it looked."""
    env = os.environ.get("NESTSPK_BENCHMARKS")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1] / "benchmarks")
    for c in candidates:
        if (c / "bench.py").is_file() and (c / "__init__.py").is_file():
            return c.resolve()
    raise FileNotFoundError(
        "nestspk-bench needs the repository's benchmarks/ folder (the harness is not part of the installed "
        f"package); looked in {', '.join(str(c) for c in candidates)}. Run it from a source checkout, or set "
        "NESTSPK_BENCHMARKS to the checkout's benchmarks folder")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        folder = find_benchmarks()
    except FileNotFoundError as e:
        sys.stderr.write(f"nestspk-bench: {e}\n")
        return 2
    root = str(folder.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"{folder.name}.bench").main(argv)


if __name__ == "__main__":
    sys.exit(main())
