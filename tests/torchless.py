"""Run code in a fresh interpreter in which importing torch (or torchaudio) raises ImportError."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BLOCK_TORCH = textwrap.dedent("""
    import sys

    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchaudio"):
                raise ImportError("torch is blocked in this test: " + name)
            return None

    sys.meta_path.insert(0, BlockTorch())
""")
TORCH_LOADED = 'sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchaudio"))'
"""An expression, inside the blocked interpreter: the torch modules that were imported (should be [])."""


def run_without_torch(code: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` (dedented) with torch blocked, from the repository root; returns the finished process."""
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)
