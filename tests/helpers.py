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


def add_invoices(d: Path, start: int, n: int, **truth: object) -> None:
    """``n`` one-page invoice PDFs ``inv<i>.pdf`` with ``<stem>.truth.json`` for the scripted engine
    (``truth`` overrides fields of every answer)."""
    import json

    from tests.conftest import invoice_truth, write_pdf

    d.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        write_pdf(d / f"inv{i}.pdf", pages=1, text=f"Invoice {i}")
        answer = {**invoice_truth(i + 1), **truth}
        (d / f"inv{i}.truth.json").write_text(json.dumps({"schema": "invoice", "truth": answer}))
