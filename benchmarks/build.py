"""Which lb the lb subjects run: as `pip install .` ships it (the hot path compiled with mypyc,
where a C compiler is), or the source tree as it stands (`--lb-build source`).

The compiled one is a copy of this tree built in place in the run's temp dir (about a minute),
so the work tree never holds extension modules that would shadow its .py files.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.backend import REPO_ROOT

_SKIP = shutil.ignore_patterns(".git", "__pycache__", "*.so", "results", "build", ".*_cache")
_IS_COMPILED = "import lb.build, sys; sys.exit(not lb.build.compiled())"


def lb_tree(kind: str, workdir: Path, log_dir: Path) -> tuple[Path, str]:
    """The directory `python -m lb` runs from for the lb subjects, and what was built there."""
    if kind == "source":
        return REPO_ROOT, "plain Python, the source tree (--lb-build source)"
    if shutil.which("cc") is None:
        return REPO_ROOT, "plain Python: no C compiler, as pip install . would ship it here"
    tree = workdir / "lb-compiled"
    shutil.copytree(REPO_ROOT, tree, ignore=_SKIP)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "lb-build.log"
    with log.open("wb") as out:
        built = subprocess.run(
            [sys.executable, "setup.py", "build_ext", "--inplace"],
            cwd=tree,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    check = subprocess.run([sys.executable, "-c", _IS_COMPILED], cwd=tree)
    if built.returncode != 0 or check.returncode != 0:
        raise RuntimeError(
            f"compiling lb's hot path failed (log {log}); --lb-build source skips it"
        )
    return tree, "hot path compiled with mypyc, as pip install . builds it"
