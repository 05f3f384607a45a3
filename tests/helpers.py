"""Helpers shared by test modules (fixtures stay in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def run_cli(
    *args: object, env: dict[str, str | None] | None = None, cwd: Path = REPO, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``docextract ARGS...`` as a subprocess, as a user would; stdout and stderr captured apart.

    ``env`` is added to this process's environment (a value of None removes the variable). Nothing is
    asserted: the caller checks the exit code and both streams."""
    exe = Path(sys.executable).parent / "docextract"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline.cli"]
    full = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    return subprocess.run([*cmd, *map(str, args)], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)
