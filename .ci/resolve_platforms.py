"""CI check: the default install (setup.cfg install_requires) resolves to wheels on other platforms.

For each platform, ``pip install --dry-run --only-binary=:all: --platform ... --python-version 3.11`` resolves the
default requirements and all their dependencies from PyPI without building or installing anything; the chosen
wheels are printed. Exit status 1 if any platform does not resolve. Needs PyPI (set NESTSPK_CI_OFFLINE=1 to skip
this check on a machine without network, which then says so).

    python .ci/resolve_platforms.py [--python-version 3.11]
"""
from __future__ import annotations

import argparse
import configparser
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLATFORMS = {
    "macOS arm64": ["macosx_14_0_arm64"],
    "Linux aarch64": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"],
    "Linux x86_64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
}


def default_requirements(setup_cfg: Path = REPO / "setup.cfg") -> list[str]:
    """``install_requires`` of setup.cfg, one requirement per entry."""
    cfg = configparser.ConfigParser()
    cfg.read(setup_cfg)
    return [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip() and not r.startswith("#")]


def resolve(requirements: list[str], platforms: list[str], python_version: str) -> tuple[bool, str]:
    """(ok, chosen wheels or pip's error) for one platform."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp", "--target", str(Path(tmp) / "t"),
               "--report", str(report), "--quiet", *[a for p in platforms for a in ("--platform", p)], *requirements]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            errors = [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR")]
            return False, "; ".join(errors) or res.stderr[-500:]
        wheels = [i["download_info"]["url"].rsplit("/", 1)[-1] for i in json.loads(report.read_text())["install"]]
        return True, ", ".join(sorted(wheels))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python-version", default="3.11")
    args = p.parse_args()
    if os.environ.get("NESTSPK_CI_OFFLINE") == "1":
        print("platform resolution: SKIPPED (NESTSPK_CI_OFFLINE=1)")
        return 0
    reqs = default_requirements()
    if any(r.split(">")[0].split("=")[0].strip().lower() in ("torch", "onnxruntime-gpu") for r in reqs):
        print(f"platform resolution: FAIL: the default install must not need torch or onnxruntime-gpu: {reqs}")
        return 1
    failed = 0
    for name, platforms in PLATFORMS.items():
        ok, text = resolve(reqs, platforms, args.python_version)
        print(f"platform resolution, {name}, Python {args.python_version}: {'ok' if ok else 'FAIL'}: {text}")
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
