"""Inputs -> Documents.

An input is a directory (walked recursively, loops cut, symlinks followed per the
``follow_symlinks`` policy, docextract output folders skipped), a glob, a single file, or a
manifest (``.txt``/``.lst``: one path per line; ``.csv``/``.parquet``: a ``path`` column).
Each document's id is the SHA-256 of its bytes; its type is sniffed from the bytes
(``pipeline.sniff``), never from the extension.  Only regular files are read.

Files that cannot be read, or are not read (not a regular file, a refused symlink), become
``Failure`` records at the ``discover`` stage, with a path-derived id so they are still
accounted for exactly once.

Files are read and hashed by a few threads (hashing and reads release the GIL; on
object storage the requests overlap).  With an ``IdentityCache`` a file whose size
and modification time are what an earlier run recorded is not read again.

An input may also be an object-store URI (``s3://bucket/prefix``, see ``pipeline.fs``):
an object, or a prefix listed recursively with the same skipping rules as a directory.
The document's ``path`` is then the object's URI.
"""

from __future__ import annotations

import glob as globmod
import hashlib
import itertools
import logging
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline import fs
from pipeline.errors import InputError
from pipeline.input_lists import MANIFEST_SUFFIXES, read_manifest
from pipeline.records import DocKind, Document, ErrorType, Failure, Stage
from pipeline.sniff import HEAD_BYTES, sniff

__all__ = ["Discovered", "IdentityCache", "InputError", "discover", "identify", "sniff"]

Signature = tuple[int, int, int, int]  # size, mtime ns, inode, ctime ns (inode and ctime 0 on object stores)
RACY_NS = 2_000_000_000  # a file modified this close to when it was read is not cached (mtime granularity)
_CHUNK = 1 << 20
log = logging.getLogger(__name__)


FollowSymlinks = Literal["within_roots", "all", "none"]
FOLLOW_SYMLINKS: tuple[FollowSymlinks, ...] = ("within_roots", "all", "none")


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
    hashed: int = 0  # files read and hashed by this discovery
    cached: int = 0  # files identified from the identity cache without reading them

    @property
    def total(self) -> int:
        return len(self.documents) + len(self.failures)


def _skipped_name(name: str) -> bool:
    """Hidden files, and ground truth written next to generated samples."""
    return name.startswith(".") or name.endswith(".truth.json") or name == "truth.jsonl"


def _is_output(names: set[str]) -> bool:
    """A docextract output folder, from the names in it: ``run.json`` + ``_state/``, or the lock file."""
    return ".docextract.lock" in names or ("run.json" in names and "_state" in names)


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(os.path.join(base, ""))


def _glob_base(spec: str) -> str:
    """The folder a glob starts from: its components before the first one with a wildcard."""
    parts = spec.split(os.sep)
    fixed = list(itertools.takewhile(lambda part: not any(ch in part for ch in "*?["), parts))
    return os.sep.join(fixed) or "."


class _Expander:
    """Inputs -> file paths, with what was refused on the way (symlinks the policy does not follow)
    and what is skipped (output folders: ours, named in ``exclude``, and any other, by its markers)."""

    def __init__(
        self,
        warnings: list[str],
        stats: dict[str, Signature] | None,
        exclude: Iterable[str | os.PathLike[str]],
        follow_symlinks: FollowSymlinks,
    ):
        if follow_symlinks not in FOLLOW_SYMLINKS:
            raise ValueError(f"follow_symlinks must be one of {FOLLOW_SYMLINKS}, not {follow_symlinks!r}")
        self.warnings = warnings
        self.stats = stats
        self.follow = follow_symlinks
        self.refused: dict[str, str] = {}  # path -> why it is not read
        excluded = [os.fspath(e) for e in exclude]
        self.excluded_uris = [e.partition("?")[0].rstrip("/") + "/" for e in excluded if fs.is_uri(e)]
        local = [e for e in excluded if not fs.is_uri(e)]
        self.excluded = sorted({os.path.abspath(e) for e in local} | {os.path.realpath(e) for e in local})
        self.roots: list[str] = []

    # ---------------------------------------------------------------- policy

    def _excluded(self, path: str, resolve: bool) -> bool:
        if not self.excluded:
            return False
        candidates = (os.path.abspath(path), os.path.realpath(path)) if resolve else (os.path.abspath(path),)
        return any(_inside(c, e) for c in candidates for e in self.excluded)

    def _link_refusal(self, path: str) -> str | None:
        """Why the symlink at ``path`` is not followed (None: it is)."""
        if self.follow == "all":
            return None
        if self.follow == "none":
            return 'a symbolic link, not followed (discover.follow_symlinks = "none")'
        target = os.path.realpath(path)
        if any(_inside(target, root) for root in self.roots):
            return None
        return (
            f"a symbolic link to {display_path(target)}, outside the input folders: not followed "
            '(discover.follow_symlinks = "within_roots")'
        )

    # ---------------------------------------------------------------- local folders

    def walk(self, root: str) -> Iterator[str]:
        """Recursive, sorted; follows the directory symlinks the policy allows, never twice into the
        same real directory; skips output folders."""
        seen: set[tuple[int, int]] = set()
        stack = [root]
        while stack:
            d = stack.pop()
            try:
                st = os.stat(d)
            except OSError as e:
                self.warnings.append(f"cannot enter directory {display_path(d)}: {e.strerror}")
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                self.warnings.append(f"skipped directory loop at {display_path(d)}")
                continue
            seen.add(key)
            if self._excluded(d, resolve=True):
                log.info("skipped %s: the output of this run", display_path(d))
                continue
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError as e:
                self.warnings.append(f"cannot list directory {display_path(d)}: {e.strerror}")
                continue
            if _is_output({e.name for e in entries}):
                self.warnings.append(f"skipped {display_path(d)}: it is a docextract output folder, not input")
                continue
            subdirs = []
            for entry in entries:
                if _skipped_name(entry.name):
                    continue  # hidden files, and ground truth written next to generated samples
                try:
                    is_dir = entry.is_dir(follow_symlinks=True)
                except OSError:
                    is_dir = False
                why = self._link_refusal(entry.path) if entry.is_symlink() else None
                if why and is_dir:
                    self.warnings.append(f"skipped directory {display_path(entry.path)}: {why}")
                elif why:
                    self.refused[entry.path] = why
                    yield entry.path
                elif is_dir:
                    subdirs.append(entry.path)
                else:
                    yield entry.path
            stack.extend(reversed(subdirs))

    def glob(self, spec: str) -> Iterator[str]:
        matches = sorted(globmod.glob(spec, recursive=True))
        if not matches:
            raise InputError(f"glob {spec!r} matched no files")
        for m in matches:
            if os.path.isdir(m):
                yield from self.walk(m)
            elif not self._excluded(m, resolve=True):
                why = self._link_refusal(m) if self.follow == "within_roots" or os.path.islink(m) else None
                if why:
                    self.refused[m] = why
                yield m

    # ---------------------------------------------------------------- object stores

    def list_uri(self, spec: str) -> list[str]:
        """An object, or every object under a prefix (recursive, sorted, hidden parts, truth and output
        folders skipped).  ``stats`` receives (size, mtime ns) of each listed object, from the listing."""
        if fs.is_file(spec):
            return [spec]
        base = spec.partition("?")[0].rstrip("/") + "/"
        listed = fs.list_file_stats(spec)
        if self.stats is not None:
            self.stats.update((uri, st) for uri, st in listed.items() if st is not None)
        keys = {uri: uri.partition("?")[0] for uri in listed}
        state_dirs = {k.rsplit("/_state/", 1)[0] + "/" for k in keys.values() if "/_state/" in k}
        outputs = sorted({k[: -len("run.json")] for k in keys.values() if k.endswith("/run.json")} & state_dirs)
        for o in outputs:
            if not any(o.startswith(e) for e in self.excluded_uris):
                self.warnings.append(f"skipped {o}: it is a docextract output folder, not input")
        skip = tuple(self.excluded_uris + outputs)
        found = []
        for uri in sorted(listed):
            key = keys[uri]
            rel = key[len(base) :] if key.startswith(base) else fs.basename(uri)
            if not key.startswith(skip) and not any(_skipped_name(part) for part in rel.split("/")):
                found.append(uri)
        if not listed and not fs.exists(spec):
            raise InputError(f"input not found: {spec}")
        return found

    # ---------------------------------------------------------------- all inputs

    def expand(self, inputs: Iterable[str | os.PathLike[str]]) -> list[str]:
        """Every file path named by the inputs, in a stable order, duplicates (same path) removed."""
        specs = [os.fspath(spec) for spec in inputs]
        for spec in specs:  # a symlink may lead into any of the folders given
            if not fs.is_uri(spec):
                if os.path.isdir(spec):
                    self.roots.append(os.path.realpath(spec))
                elif any(ch in spec for ch in "*?[") and not os.path.exists(spec):
                    self.roots.append(os.path.realpath(_glob_base(spec)))
        out: list[str] = []
        for spec in specs:
            if fs.is_uri(spec):
                out.extend(self.list_uri(spec))
            elif any(ch in spec for ch in "*?[") and not os.path.exists(spec):
                out.extend(self.glob(spec))
            elif os.path.isdir(spec):
                out.extend(self.walk(spec))
            elif os.path.lexists(spec):
                p = Path(spec)
                if p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file():
                    out.extend(m for m in read_manifest(p) if fs.is_uri(m) or not self._excluded(m, resolve=False))
                else:
                    out.append(spec)  # named explicitly: read as named, whatever the symlink policy
            else:
                raise InputError(f"input not found: {spec}")
        return list(dict.fromkeys(out))


def identify(path: str) -> tuple[Document, Failure | None]:
    """Hash and sniff one file.  Never raises for a bad file: returns a failure instead.

    Only regular files are read (``fs.open_document``: never a FIFO or a device, and never waiting).
    No byte of a file that is not a recognised document goes into a message."""
    shown = display_path(path)
    try:
        h = hashlib.sha256()
        size = 0
        head = b""
        with fs.open_document(path) as f:  # a local path or an object-store URI
            while chunk := f.read(_CHUNK):
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
                h.update(chunk)
                size += len(chunk)
    except fs.NotRegularFile as e:
        doc = Document(path_id(path), path, DocKind.UNKNOWN, 0)
        msg = f"{shown} is {e.what}, not a regular file: not read"
        return doc, Failure(doc.doc_id, Stage.DISCOVER, ErrorType.UNSUPPORTED_TYPE, msg)
    except OSError as e:
        doc = Document(path_id(path), path, DocKind.UNKNOWN, 0)
        reason = e.strerror or type(e).__name__
        return doc, Failure(doc.doc_id, Stage.DISCOVER, ErrorType.UNREADABLE, f"cannot read {shown}: {reason}")
    doc = Document(h.hexdigest(), path, sniff(head, size), size)
    if size == 0:
        return doc, Failure(doc.doc_id, Stage.DISCOVER, ErrorType.EMPTY_FILE, f"{shown} is empty (0 bytes)")
    if doc.kind is DocKind.UNKNOWN:  # what the bytes are is not said: they may be anything (a key, a password)
        return doc, Failure(
            doc.doc_id,
            Stage.DISCOVER,
            ErrorType.UNSUPPORTED_TYPE,
            f"{shown}: not a PDF, PNG, JPEG, TIFF, WebP, BMP or GIF ({size:,} bytes)",
        )
    return doc, None


def _refused(path: str, why: str) -> tuple[Document, Failure]:
    """The row of a path not read by policy (a symlink that ``follow_symlinks`` does not follow)."""
    doc = Document(path_id(path), path, DocKind.UNKNOWN, 0)
    return doc, Failure(doc.doc_id, Stage.DISCOVER, ErrorType.REFUSED_SYMLINK, f"{display_path(path)} is {why}")


class IdentityCache:
    """What earlier runs learnt about each input file: where it is, its signature, its doc_id and kind.

    A file whose signature is unchanged is taken to hold the same bytes, so a nightly re-run over
    a large folder or bucket stats it instead of reading and hashing every file again; ``--rehash``
    ignores the cache.  The signature is size + mtime, and for local files also the inode and the
    ctime (which no copy tool can set back: ``cp -p`` and ``rsync -a`` keep the mtime, not these).
    Like git's "racily clean" rule, a file modified less than 2 s before it was read is not cached
    (with coarse timestamps, a later write could keep the same mtime; S3's are whole seconds), and
    a local file whose signature changed while it was read is not cached either.

    Stored in the output as ``_state/identities.parquet``; it holds the files of the last
    discovery, so it stays the size of the input.  Only files identified as a supported,
    non-empty type are kept: anything else is looked at again each run."""

    PARTS = ("_state", "identities.parquet")

    def __init__(self, entries: dict[str, tuple[Signature, str, str]] | None = None):
        self.entries = entries or {}
        self.seen: dict[str, tuple[Signature, str, str]] = {}

    @staticmethod
    def key(path: str) -> str:
        return path if fs.is_uri(path) else os.path.abspath(path)

    @classmethod
    def load(cls, out_dir: str | os.PathLike[str]) -> IdentityCache:
        import pyarrow as pa
        import pyarrow.parquet as pq

        loc = fs.join(out_dir, *cls.PARTS)
        try:
            with fs.open_input_file(loc) as f:
                c = pq.read_table(f).to_pydict()
            entries = {
                os.fsdecode(p): ((int(sz), int(mt), int(ino), int(ct)), str(d), str(k))
                for p, sz, mt, ino, ct, d, k in zip(
                    c["path"], c["size"], c["mtime_ns"], c["inode"], c["ctime_ns"], c["doc_id"], c["kind"], strict=True
                )
            }
        except FileNotFoundError:
            return cls()
        except (OSError, KeyError, ValueError, TypeError, pa.ArrowException) as e:
            log.warning("ignoring the identity cache %s (%s): every input will be read", loc, e)
            return cls()
        return cls(entries)

    def lookup(self, path: str, st: Signature | None) -> Document | None:
        e = self.entries.get(self.key(path))
        if st is None or e is None or e[0] != st:
            return None
        try:
            return Document(e[1], path, DocKind(e[2]), st[0])
        except ValueError:
            return None

    def remember(self, doc: Document, before: Signature | None, after: Signature | None, read_at_ns: int) -> None:
        """Record ``doc`` if it is safe: signature known, the same after the read as before it (local
        files), and its mtime at least ``RACY_NS`` older than the read."""
        if before is None or before[0] != doc.size or doc.size == 0:
            return
        if doc.kind is DocKind.UNKNOWN or doc.doc_id.startswith("path:"):
            return
        if after is not None and after != before:
            return
        if read_at_ns - before[1] < RACY_NS:
            return
        self.seen[self.key(doc.path)] = (before, doc.doc_id, doc.kind.value)

    def save(self, out_dir: str | os.PathLike[str]) -> None:
        import pyarrow as pa

        from pipeline.store import parquet_bytes

        rows = list(self.seen.items())
        table = pa.table(
            {
                "path": pa.array([os.fsencode(p) for p, _ in rows], pa.binary()),  # names need not be UTF-8
                "size": pa.array([e[0][0] for _, e in rows], pa.int64()),
                "mtime_ns": pa.array([e[0][1] for _, e in rows], pa.int64()),
                "inode": pa.array([e[0][2] for _, e in rows], pa.uint64()),
                "ctime_ns": pa.array([e[0][3] for _, e in rows], pa.int64()),
                "doc_id": pa.array([e[1] for _, e in rows], pa.string()),
                "kind": pa.array([e[2] for _, e in rows], pa.string()),
            }
        )
        fs.write_bytes_atomic(fs.join(out_dir, *self.PARTS), parquet_bytes(table))


def _threads_for(paths: list[str]) -> int:
    """Object storage: 16 requests in flight.  Local: 4 (bench/discover.py, 6,800 files on 2 cores:
    1.56x faster than 1 thread when the files are not in the page cache, 0.86x when they are)."""
    if any(fs.is_uri(p) for p in paths[:1000]):
        return 16
    return 4


def discover(
    inputs: Iterable[str | os.PathLike[str]],
    cache: IdentityCache | None = None,
    threads: int | None = None,
    exclude: Iterable[str | os.PathLike[str]] = (),
    follow_symlinks: FollowSymlinks = "within_roots",
) -> Discovered:
    """Expand inputs and identify every file.  Identical bytes under two paths are one document.

    With ``cache``, unchanged files (same size and mtime as recorded) are not read; what this
    discovery identified is recorded in ``cache.seen`` (the caller saves it).

    ``exclude``: folders or prefixes never taken as input (the run's own output).  Any other folder
    that is a docextract output (``run.json`` + ``_state/``, or ``.docextract.lock``) is skipped with
    a warning.  ``follow_symlinks`` (``discover.follow_symlinks``): which symlinks met while walking a
    folder or matching a glob are followed: ``within_roots`` (those whose target is inside one of the
    input folders), ``all`` or ``none``; a refused file link is a ``refused_symlink`` row, a refused
    folder link a warning.  Paths named on the command line or in a manifest are read as named."""
    result = Discovered()
    stats: dict[str, Signature] = {}
    expander = _Expander(result.warnings, stats, exclude, follow_symlinks)
    paths = expander.expand(inputs)

    def one(path: str) -> tuple[Document, Failure | None, Signature | None, Signature | None, int, bool]:
        before = after = None
        read_at = time.time_ns()
        if path in expander.refused:
            return (*_refused(path, expander.refused[path]), None, None, read_at, False)
        if cache is not None:
            before = stats.get(path) or fs.stat(path)  # before reading: a file changed meanwhile is read next time
            doc = cache.lookup(path, before)
            if doc is not None:
                return doc, None, before, before, read_at, True
        doc, failure = identify(path)
        if cache is not None and not fs.is_uri(path):
            after = fs.stat(path)  # local: cheap; changed while read -> not cached
        return doc, failure, before, after, read_at, False

    n = threads or _threads_for(paths)
    if n > 1 and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="docextract-discover") as ex:
            identified = list(ex.map(one, paths))  # in input order
    else:
        identified = [one(p) for p in paths]
    by_id: dict[str, str] = {}
    for doc, failure, before, after, read_at, from_cache in identified:
        if from_cache:
            result.cached += 1
        else:
            result.hashed += 1
        if cache is not None and failure is None:
            cache.remember(doc, before, after, read_at)
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
