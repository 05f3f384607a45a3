"""Output faults made on purpose (the output's fault corpus, as ``raster_faults`` is the rasterizer's):
files in ``results/`` and ``failures/`` that are not parts of ours, a crafted output whose ``run.json``
names code, and an engine that deletes the output under a running job."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers import invoice_truth
from tests.scripted_engine import ScriptedEngine

# A name that sorts after every real part (run ids start with a UTC timestamp): the newest "part".
_LATE = "part-99991231T000000000000Z-fault"


def _strings(n: int, value: str) -> pa.Array:
    return pa.array([value] * n, pa.string())


def damage_output(out: Path) -> dict[str, tuple[str, str]]:
    """Drop one file per fault into ``out``; return ``{file name: (table, what the reason names)}``."""
    res = out / "results"
    faults: dict[str, tuple[str, str]] = {}

    def part(table: str, tag: str, columns: dict[str, Any], reason: str) -> None:
        name = f"{_LATE}{tag}-00000.parquet"
        pq.write_table(pa.table(columns), out / table / name)
        faults[name] = (table, reason)

    (res / f"{_LATE}zero-00000.parquet").write_bytes(b"")  # a copy that never happened
    faults[f"{_LATE}zero-00000.parquet"] = ("results", "0 bytes")
    (res / "notes.parquet").write_bytes(b"these are my notes, not Parquet\n")  # a stranger's file
    faults["notes.parquet"] = ("results", "part-<run_id>-<seq>.parquet")
    part("results", "intid", {"doc_id": pa.array([1, 2]), "source_path": _strings(2, "a.pdf"),
                              "run_key": _strings(2, "k")}, "doc_id")
    part("results", "nullid", {"doc_id": pa.array([None, "d"], pa.string()), "source_path": _strings(2, "a.pdf"),
                               "run_key": _strings(2, "k")}, "null 'doc_id'")
    part("results", "intkey", {"doc_id": _strings(1, "d"), "source_path": _strings(1, "a.pdf"),
                               "run_key": pa.array([7])}, "run_key")
    failure = {"doc_id": _strings(1, "d"), "source_path": _strings(1, "a.pdf"), "run_key": _strings(1, "k"),
               "stage": _strings(1, "validate"), "message": _strings(1, "m")}
    part("failures", "nulltype", {**failure, "error_type": pa.array([None], pa.string())}, "null 'error_type'")
    part("failures", "oddtype", {**failure, "error_type": _strings(1, "cosmic_ray")}, "cosmic_ray")
    return faults


EVIL_MODULE = """\
import pathlib
from pydantic import BaseModel
pathlib.Path({marker!r}).write_text("imported")


class Payload(BaseModel):
    total: str = ""
"""


def plant_code(out: Path, cwd: Path, marker: Path) -> None:
    """Make ``run.json`` name ``evil:Payload`` as its schema, with ``evil.py`` (which writes
    ``marker`` when imported) in the output and in ``cwd``."""
    import json

    manifest = json.loads((out / "run.json").read_text())
    manifest["schema"] = manifest["config"]["schema"] = "evil:Payload"
    (out / "run.json").write_text(json.dumps(manifest))
    for d in (out, cwd):
        (d / "evil.py").write_text(EVIL_MODULE.format(marker=str(marker)))


def remove_dir(path: Path) -> None:
    """``rm -rf path``, again while a commit running meanwhile makes it fail ("directory not empty")."""
    for _ in range(100):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.01)


class OutputThief(ScriptedEngine):
    """Answers with an invoice; while answering its ``after``-th request it deletes the output
    directory (someone's clean-up job running into the nightly run)."""

    def __init__(self, out: Path, after: int):
        self.out, self.after, self.seen = Path(out), after, 0
        super().__init__(callback=self._answer, record=False)

    def _answer(self, request: Any) -> dict[str, Any]:
        self.seen += 1
        if self.seen == self.after:
            remove_dir(self.out)
        return invoice_truth()


def output_thief(config: Any = None) -> OutputThief:
    """``--engine tests.output_faults:output_thief``; ``engine.options``: ``out``, ``after``."""
    options = getattr(config, "options", {}) or {}
    return OutputThief(Path(options["out"]), int(options.get("after", 3)))
