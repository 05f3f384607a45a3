"""Manifests: files that list the inputs (``.txt``/``.lst``: one path per line, ``#`` comments;
``.csv``/``.parquet``: a ``path`` column).  Relative paths are relative to the manifest."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from pipeline import fs
from pipeline.errors import InputError

MANIFEST_SUFFIXES = {".txt", ".lst", ".csv", ".parquet"}




def _manifest_paths(path: Path) -> list[str]:
    """The ``path`` entries of a manifest file."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"manifest {path} cannot be read as Parquet: {e}") from None
        if "path" not in table.column_names:
            raise InputError(f"manifest {path} has no 'path' column (columns: {table.column_names})")
        col = table.column("path")
        t = col.type
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return [os.fsdecode(p) for p in col.to_pylist() if p]  # names that need not be UTF-8
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or str(t) == "string_view"):
            raise InputError(f"manifest {path}: its 'path' column holds {t}, not text")
        return [p for p in col.to_pylist() if p]
    # surrogateescape: a name that is not UTF-8 comes back as its own bytes, as os.listdir gives it
    with path.open(newline="" if suffix == ".csv" else None, encoding="utf-8", errors="surrogateescape") as f:
        if suffix == ".csv":
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise InputError(f"manifest {path} has no 'path' column (header: {reader.fieldnames})")
            return [row["path"] for row in reader if row.get("path")]
        lines = [ln.strip() for ln in f.read().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def read_manifest(path: Path) -> list[str]:
    base = path.parent
    return [p if os.path.isabs(p) or fs.is_uri(p) else str(base / p) for p in _manifest_paths(path)]
