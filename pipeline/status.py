"""``docextract status``: what is done, failed (by type) and pending for an output location."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import fs
from pipeline.config import JobConfig
from pipeline.discover import IdentityCache, discover
from pipeline.errors import CouldNotStart, InputError
from pipeline.runner import run_key_for
from pipeline.store import finished_docs, read_table
from schemas import resolve


@dataclass
class Status:
    run_key: str
    done: int
    failed_by_type: dict[str, int]
    pending: int | None  # None when the inputs are unknown
    other_keys: int  # rows written under another run key (older schema/model/settings)
    last_run: dict[str, Any] | None


def status(out_dir: str | Path, inputs: list[str] | None = None, config: JobConfig | None = None) -> Status:
    """What is done, failed (by type) and pending for an output directory.

    Inputs and config default to those of the last run recorded in ``run.json``.
    """
    out_dir = out_dir if fs.is_uri(out_dir) else Path(out_dir)
    manifest = None
    if fs.exists(fs.join(out_dir, "run.json")):
        manifest = json.loads(fs.read_bytes(fs.join(out_dir, "run.json")))
    if config is None:
        if manifest is None:
            raise CouldNotStart(f"{out_dir} has no run.json; pass the config used for the run")
        config = JobConfig.model_validate(manifest["config"])
    if inputs is None and manifest is not None:
        inputs = manifest.get("inputs")
    model = resolve(config.schema_name)
    key = run_key_for(config, model)
    done, failed = finished_docs(out_dir, key)
    other = 0
    for name in ("results", "failures"):
        t = read_table(out_dir, name)
        if t is not None:
            other += sum(1 for k in t.column("run_key").to_pylist() if k != key)
    pending = None
    if inputs:
        try:
            found = discover(inputs, cache=IdentityCache.load(out_dir))  # read-only here: not saved
            ids = [d.doc_id for d in found.documents] + [d.doc_id for d, _ in found.failures]
            pending = sum(1 for i in ids if i not in done and i not in failed)
        except (InputError, OSError):
            pending = None
    return Status(key, len(done), dict(Counter(failed.values())), pending, other, manifest)
