"""``docextract status``: what is done, failed (by type) and pending for an output location.

Reading an output never imports code the output names: the run key comes from ``run.json``
(``run_key``), not from the schema it records.  A schema is imported only when the caller passes a
config (``docextract status OUT -c job.toml``) naming it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from pipeline import fs
from pipeline.config import JobConfig
from pipeline.discover import IdentityCache, discover
from pipeline.errors import CouldNotStart, InputError, SchemaMappingError, SchemaNotFound
from pipeline.output import writer_present
from pipeline.store import SkippedPart, finished_in, read_keys
from pipeline.summary import ABANDONED, RUNNING


@dataclass
class Status:
    run_key: str
    done: int
    failed_by_type: dict[str, int]
    pending: int | None  # None when the inputs are unknown
    other_keys: int  # rows written under another run key (older schema/model/settings)
    last_run: dict[str, Any] | None
    #: the last run's status: run.json's, except that a "running" run that no longer holds the output
    #: (no lock, no live lease: killed, or its machine lost) is "abandoned"
    last_run_status: str | None = None
    damaged: list[SkippedPart] = field(default_factory=list)  # files left out: not parts of ours, unreadable


def read_manifest(out_dir: Path | str) -> dict[str, Any] | None:
    """``run.json`` of an output, None when there is none.  ``CouldNotStart`` when it is not a JSON object."""
    loc = fs.join(out_dir, "run.json")
    if not fs.exists(loc):
        return None
    try:
        manifest = json.loads(fs.read_bytes(loc))
    except (OSError, ValueError) as e:
        raise CouldNotStart(f"cannot read {loc} ({e})") from e
    if not isinstance(manifest, dict):
        raise CouldNotStart(f"{loc} is not a run manifest (a JSON object)")
    return manifest


def run_status(out_dir: Path | str, manifest: dict[str, Any] | None) -> str | None:
    """The last run's status (``run.json``), ``abandoned`` for a ``running`` run that no run holds any more."""
    if manifest is None:
        return None
    status = manifest.get("status")
    if status == RUNNING and not writer_present(out_dir):
        # A run writes its final run.json before it lets go of the output: read it again, or a run that
        # ended between the first read and the look at the lock would be called abandoned.
        again = read_manifest(out_dir) or {}
        status = again.get("status")
        if status == RUNNING and again.get("run_id") == manifest.get("run_id"):
            return ABANDONED
    return status if isinstance(status, str) else None


def _run_key(out_dir: Path | str, manifest: dict[str, Any] | None, config: JobConfig | None) -> str:
    if config is not None:  # the caller named the schema: importing it is theirs to decide
        from pipeline.runner import run_key_for
        from schemas import resolve

        try:
            return run_key_for(config, resolve(config.schema_name))
        except (SchemaNotFound, SchemaMappingError) as e:
            raise CouldNotStart(str(e)) from e
    key = (manifest or {}).get("run_key")
    if not isinstance(key, str):
        where = "has no run.json" if manifest is None else "has a run.json without a run key"
        raise CouldNotStart(f"{out_dir} {where}; pass the config used for the run (-c)")
    return key


def status(out_dir: str | Path, inputs: list[str] | None = None, config: JobConfig | None = None) -> Status:
    """What is done, failed (by type) and pending for an output directory.

    The run key is the last run's (``run.json``) unless ``config`` is given; inputs default to the
    last run's.  Files in ``results/``/``failures/`` that are not readable parts of ours are left out
    and listed in ``damaged``."""
    out_dir = out_dir if fs.is_uri(out_dir) else Path(out_dir)
    try:
        manifest = read_manifest(out_dir)
    except CouldNotStart as e:
        if config is None:
            raise CouldNotStart(f"{e}; pass the config used for the run (-c)") from e
        manifest = None
    key = _run_key(out_dir, manifest, config)
    if inputs is None and manifest is not None and isinstance(manifest.get("inputs"), list):
        inputs = [str(i) for i in manifest["inputs"]]
    damaged: list[SkippedPart] = []
    keys = read_keys(out_dir, skipped=damaged)
    done, failed = finished_in(keys, key)
    other = sum(t.num_rows - (pc.sum(pc.equal(t.column("run_key"), key)).as_py() or 0) for t in keys if t is not None)
    pending = None
    if inputs:
        try:
            found = discover(inputs, cache=IdentityCache.load(out_dir), exclude=[out_dir])  # read-only: not saved
            ids = [d.doc_id for d in found.documents] + [d.doc_id for d, _ in found.failures]
            pending = sum(1 for i in ids if i not in done and i not in failed)
        except (InputError, OSError):
            pending = None
    return Status(key, len(done), dict(Counter(failed.values())), pending, other, manifest,
                  run_status(out_dir, manifest), damaged)
