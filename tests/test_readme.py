"""The README is for users first: its section order, and its 5-line API example runs as written."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def test_sections_in_user_order() -> None:
    heads = [h for h in re.findall(r"^## (.+)$", README, flags=re.M)]
    order = ["Install", "Python API", "Command line", "Accuracy", "Limitations"]
    pos = [next(i for i, h in enumerate(heads) if h.startswith(t)) for t in order]
    assert pos == sorted(pos) and pos[0] == 0, heads
    # the speed section shows the current peer ratios (issue 18); full GPU/DDP detail lives in benchmarks/README.md
    assert "benchmarks/README.md" in README and not [h for h in heads if "DDP" in h or "GPU" in h], heads


def test_api_example_runs(example_files) -> None:
    api = README.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", api, flags=re.S).group(1)
    lines = [ln for ln in code.splitlines() if ln.strip()]
    assert len(lines) <= 6, lines  # the import and five lines
    code = code.replace('"a.wav"', repr(str(example_files["a1"]))).replace('"b.flac"', repr(str(example_files["a2"])))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["r"].same_speaker and scope["e"].shape == (512,)


def test_layout_table_names_every_module() -> None:
    """The README's layout table matches the tree: every module and sub-package of nestspk/ is named in it."""
    layout = README[README.index("## Layout"):]
    layout = layout[:layout.index("\n## ", 1)]
    covered = set()
    for row in layout.splitlines():
        if row.startswith("| `"):
            for token in re.findall(r"`([^`]+)`", row.split("|")[1]):
                covered.add(token.removeprefix("nestspk/"))
    pkg = REPO / "nestspk"
    modules = [p.name for p in pkg.glob("*.py") if not p.name.startswith("_")]
    packages = [f"{p.name}/" for p in pkg.iterdir() if (p / "__init__.py").is_file()]
    missing = sorted(set(modules + packages) - covered)
    assert not missing, f"README layout table does not name: {missing}"
    stale = sorted(t for t in covered if t.endswith(".py") and "/" not in t and not (pkg / t).is_file()
                   and not (REPO / t).exists())
    assert not stale, f"README layout table names files that do not exist: {stale}"
