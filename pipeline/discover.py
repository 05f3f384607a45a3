"""Inputs -> Documents.

An input is a directory (walked recursively, symlinks followed once, loops cut),
a glob, a single file, or a manifest (``.txt``/``.lst``: one path per line;
``.csv``/``.parquet``: a ``path`` column).  Each document's id is the SHA-256 of
its bytes; its type is sniffed from the bytes, never from the extension.

Files that cannot be read become ``Failure`` records at the ``discover`` stage,
with a path-derived id so they are still accounted for exactly once.

An input may also be an object-store URI (``s3://bucket/prefix``, see ``pipeline.fs``):
an object, or a prefix listed recursively with the same skipping rules as a directory.
The document's ``path`` is then the object's URI.
"""

from __future__ import annotations

import csv
import glob as globmod
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import fs
from pipeline.records import DocKind, Document, ErrorType, Failure, Stage

MANIFEST_SUFFIXES = {".txt", ".lst", ".csv", ".parquet"}
_CHUNK = 1 << 20


class InputError(ValueError):
    """An input argument cannot be used at all (missing path, bad manifest)."""


def sniff(head: bytes) -> DocKind:
    """Recognise a supported format from the first bytes of a file."""
    if head.startswith(b"%PDF-") or b"%PDF-" in head[:1024]:
        return DocKind.PDF
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return DocKind.PNG
    if head.startswith(b"\xff\xd8\xff"):
        return DocKind.JPEG
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return DocKind.TIFF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return DocKind.WEBP
    if head[:2] == b"BM" and len(head) >= 26:
        return DocKind.BMP
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return DocKind.GIF
    return DocKind.UNKNOWN


def display_path(path: str) -> str:
    """A UTF-8-safe rendering of a path (non-UTF-8 bytes in names become U+FFFD)."""
    return os.fsencode(path).decode("utf-8", "replace")


def path_id(path: str) -> str:
    return "path:" + hashlib.sha256(os.fsencode(path)).hexdigest()


@dataclass
class Discovered:
    documents: list[Document] = field(default_factory=list)
    failures: list[tuple[Document, Failure]] = field(default_factory=list)
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # doc_id -> other paths with the same bytes
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.documents) + len(self.failures)


def _walk(root: str, warnings: list[str]) -> Iterator[str]:
    """Recursive, sorted, follows directory symlinks but never twice into the same real directory."""
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
        except OSError as e:
            warnings.append(f"cannot enter directory {display_path(d)}: {e.strerror}")
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            warnings.append(f"skipped directory loop at {display_path(d)}")
            continue
        seen.add(key)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            warnings.append(f"cannot list directory {display_path(d)}: {e.strerror}")
            continue
        subdirs = []
        for entry in entries:
            if _skipped_name(entry.name):
                continue  # hidden files, and ground truth written next to generated samples
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(entry.path)
            else:
                yield entry.path
        stack.extend(reversed(subdirs))


def _skipped_name(name: str) -> bool:
    """Hidden files, and ground truth written next to generated samples."""
    return name.startswith(".") or name.endswith(".truth.json") or name == "truth.jsonl"


def _list_uri(spec: str) -> list[str]:
    """An object, or every object under a prefix (recursive, sorted, hidden parts and truth skipped)."""
    if fs.is_file(spec):
        return [spec]
    base = spec.partition("?")[0].rstrip("/") + "/"
    found = []
    for uri in fs.list_files(spec, recursive=True):
        rel = uri.partition("?")[0][len(base) :] if uri.startswith(base) else fs.basename(uri)
        if not any(_skipped_name(part) for part in rel.split("/")):
            found.append(uri)
    if not found and not fs.exists(spec):
        raise InputError(f"input not found: {spec}")
    return found


def _read_manifest(path: Path) -> list[str]:
    base = path.parent
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "path" not in table.column_names:
            raise InputError(f"manifest {path} has no 'path' column (columns: {table.column_names})")
        raw = [p for p in table.column("path").to_pylist() if p]
    elif suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise InputError(f"manifest {path} has no 'path' column (header: {reader.fieldnames})")
            raw = [row["path"] for row in reader if row.get("path")]
    else:
        raw = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        raw = [ln for ln in raw if ln and not ln.startswith("#")]
    return [p if os.path.isabs(p) or fs.is_uri(p) else str(base / p) for p in raw]


def expand_inputs(inputs: Iterable[str], warnings: list[str]) -> list[str]:
    """Every file path named by the inputs, in a stable order, duplicates (same path) removed."""
    out: list[str] = []
    for spec in inputs:
        spec = str(spec)
        if fs.is_uri(spec):
            out.extend(_list_uri(spec))
        elif any(ch in spec for ch in "*?[") and not os.path.exists(spec):
            matches = sorted(globmod.glob(spec, recursive=True))
            if not matches:
                raise InputError(f"glob {spec!r} matched no files")
            for m in matches:
                out.extend(_walk(m, warnings) if os.path.isdir(m) else [m])
        elif os.path.isdir(spec):
            out.extend(_walk(spec, warnings))
        elif os.path.lexists(spec):
            p = Path(spec)
            if p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file():
                out.extend(_read_manifest(p))
            else:
                out.append(spec)
        else:
            raise InputError(f"input not found: {spec}")
    seen: set[str] = set()
    unique = []
    for p in out:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique


def identify(path: str) -> tuple[Document, Failure | None]:
    """Hash and sniff one file.  Never raises for a bad file: returns a failure instead."""
    shown = display_path(path)
    try:
        h = hashlib.sha256()
        size = 0
        head = b""
        with fs.open_input(path) as f:  # a local path or an object-store URI
            while chunk := f.read(_CHUNK):
                if not head:
                    head = chunk[:1024]
                h.update(chunk)
                size += len(chunk)
    except OSError as e:
        doc = Document(path_id(path), path, DocKind.UNKNOWN, 0)
        reason = e.strerror or type(e).__name__
        return doc, Failure(doc.doc_id, Stage.DISCOVER, ErrorType.UNREADABLE, f"cannot read {shown}: {reason}")
    doc = Document(h.hexdigest(), path, sniff(head), size)
    if size == 0:
        return doc, Failure(doc.doc_id, Stage.DISCOVER, ErrorType.EMPTY_FILE, f"{shown} is empty (0 bytes)")
    if doc.kind is DocKind.UNKNOWN:
        hint = head[:16].hex(" ")
        return doc, Failure(
            doc.doc_id,
            Stage.DISCOVER,
            ErrorType.UNSUPPORTED_TYPE,
            f"{shown}: not a PDF, PNG, JPEG, TIFF, WebP, BMP or GIF (first bytes: {hint})",
        )
    return doc, None


def discover(inputs: Iterable[str]) -> Discovered:
    """Expand inputs and identify every file.  Identical bytes under two paths are one document."""
    result = Discovered()
    paths = expand_inputs(inputs, result.warnings)
    by_id: dict[str, str] = {}
    for path in paths:
        doc, failure = identify(path)
        if doc.doc_id in by_id:
            result.duplicates.setdefault(doc.doc_id, []).append(doc.display_path)
            continue
        by_id[doc.doc_id] = doc.path
        if failure is None:
            result.documents.append(doc)
        else:
            result.failures.append((doc, failure))
    if result.duplicates:
        n = sum(len(v) for v in result.duplicates.values())
        result.warnings.append(f"{n} file(s) have the same bytes as another input and were not processed twice")
    return result
