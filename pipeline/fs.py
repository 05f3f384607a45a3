"""Local paths and object-store URIs behind one small set of functions (over ``pyarrow.fs``).

A *location* is either a local path (``str`` or ``Path``) or a URI that ``pyarrow.fs``
understands (``s3://bucket/key``, ``gs://...``, ``hdfs://...``, ``file:///...``).
Local paths keep the behaviour of plain ``open``/``os`` calls; URIs go through
``pyarrow.fs.FileSystem.from_uri``.

S3 configuration comes from the standard environment: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``/``AWS_REGION`` and
``AWS_ENDPOINT_URL`` (an S3-compatible server such as MinIO or moto).  Checked with
pyarrow 26: ``FileSystem.from_uri`` honours ``AWS_ENDPOINT_URL`` while a bare
``S3FileSystem()`` does not, so URIs always go through ``from_uri``.  Per-URI options
also work (``s3://bucket/key?endpoint_override=host:port&scheme=http``).

Atomicity: a local write goes to a temporary file in the same directory, is fsynced and
renamed into place.  An object store write is one object upload, which readers see
either whole or not at all (S3 makes an object visible only when its PUT, or its
multipart upload, completes), so the final key is written directly, in one ``write`` call:
pyarrow does not complete an upload whose parts failed, and a killed process leaves at
most an invisible, unfinished multipart upload (an S3 lifecycle rule can expire those).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import stat as statmod
import uuid
from pathlib import Path
from typing import IO, Any

import pyarrow.fs as pafs

Location = str | os.PathLike[str]

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
_ENV_KEYS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
)


def is_uri(location: object) -> bool:
    """True for ``scheme://...`` strings (a Windows drive such as ``C:\\`` is not a URI)."""
    return isinstance(location, str) and bool(_URI.match(location))


@functools.lru_cache(maxsize=32)
def _filesystem(root: str, env: tuple[str | None, ...]) -> pafs.FileSystem:
    """One filesystem per (scheme://authority?query, environment); ``env`` is only a cache key."""
    fs, _ = pafs.FileSystem.from_uri(root)
    return fs


def _split(uri: str) -> tuple[str, str, str]:
    """``scheme://authority/key?query`` -> (``scheme://authority``, ``/key``, ``?query``)."""
    head, sep, query = uri.partition("?")
    scheme, _, rest = head.partition("://")
    authority, slash, key = rest.partition("/")
    return f"{scheme}://{authority}", slash + key, sep + query


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """The ``pyarrow.fs`` filesystem for a URI and the path inside it (cached per bucket/host).

    Keys are taken as written (no percent-decoding), so listed URIs round-trip."""
    root, _, query = _split(uri)
    env = tuple(os.environ.get(k) for k in _ENV_KEYS)
    fs = _filesystem(root + "/" + query, env)
    path = pafs.FileSystem.from_uri(uri)[1] if query else _path_in(uri, fs)
    return fs, path


def _path_in(uri: str, fs: pafs.FileSystem) -> str:
    """The filesystem path of a URI without a query: ``bucket/key`` for object stores."""
    root, key, _ = _split(uri)
    if isinstance(fs, pafs.LocalFileSystem) or fs.type_name in ("hdfs",):
        return key or "/"
    authority = root.split("://", 1)[1]
    return (authority + key).rstrip("/") or authority


def _uri_of(uri: str, fs: pafs.FileSystem, path: str) -> str:
    """The URI of ``path`` (a path in ``fs``, the filesystem of ``uri``), for listings."""
    root, _, query = _split(uri)
    if isinstance(fs, pafs.LocalFileSystem) or fs.type_name in ("hdfs",):
        return root + path + query
    return root.split("://", 1)[0] + "://" + path + query


def join(base: Location, *parts: str) -> Any:
    """``base / part / ...``: a ``Path`` for local locations, a ``str`` for URIs."""
    if is_uri(base):
        head, sep, query = str(base).partition("?")
        return "/".join([head.rstrip("/"), *(p.strip("/") for p in parts)]) + sep + query
    return Path(base).joinpath(*parts)


def basename(location: Location) -> str:
    """The last path component (``part-1.parquet`` of ``s3://b/results/part-1.parquet``)."""
    if is_uri(location):
        return str(location).partition("?")[0].rstrip("/").rsplit("/", 1)[-1]
    return Path(location).name


def open_input(location: Location) -> IO[bytes]:
    """A binary stream for reading (context manager, ``read(n)``).  Raises ``OSError``."""
    if is_uri(location):
        fs, path = filesystem_for(str(location))
        return fs.open_input_stream(path)  # type: ignore[return-value]
    return open(location, "rb")


class NotRegularFile(OSError):
    """A local input that is a FIFO, a device, a socket or a directory: not a document, never read."""

    def __init__(self, location: Location, mode: int):
        self.what = _file_type(mode)
        super().__init__(f"{os.fsdecode(location)} is {self.what}, not a regular file")


def _file_type(mode: int) -> str:
    for test, what in (
        (statmod.S_ISFIFO, "a FIFO (named pipe)"),
        (statmod.S_ISCHR, "a character device"),
        (statmod.S_ISBLK, "a block device"),
        (statmod.S_ISSOCK, "a socket"),
        (statmod.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return what
    return "a special file"


def open_document(location: Location) -> IO[bytes]:
    """Like ``open_input``, for input documents: a local path must be a regular file (after symlinks),
    else ``NotRegularFile``.  Checked before opening (a device is never opened) and again on the open
    descriptor, which is opened non-blocking: a FIFO or a device put there in between cannot make the
    open or a read wait forever."""
    if is_uri(location):
        return open_input(location)
    mode = os.stat(location).st_mode
    if not statmod.S_ISREG(mode):
        raise NotRegularFile(location, mode)
    fd = os.open(location, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not statmod.S_ISREG(mode):
            raise NotRegularFile(location, mode)
        return os.fdopen(fd, "rb")  # O_NONBLOCK does not change reads of a regular file
    except BaseException:
        os.close(fd)
        raise


def read_document(location: Location) -> bytes:
    """All bytes of an input document (see ``open_document``).  Raises ``OSError``."""
    with open_document(location) as f:
        return f.read()


def open_input_file(location: Location) -> Any:
    """A seekable binary file, for Parquet's range reads.  Raises ``OSError``."""
    if is_uri(location):
        fs, path = filesystem_for(str(location))
        return fs.open_input_file(path)
    return open(location, "rb")


def read_bytes(location: Location) -> bytes:
    """All bytes of a file or object.  Raises ``OSError`` (``FileNotFoundError`` when missing)."""
    with open_input(location) as f:
        return f.read()


def exists(location: Location) -> bool:
    """True when a file/object (or a directory/prefix) exists."""
    if is_uri(location):
        fs, path = filesystem_for(str(location))
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    return os.path.exists(location)


def is_file(location: Location) -> bool:
    """True for an existing file/object (not a directory or prefix)."""
    if is_uri(location):
        fs, path = filesystem_for(str(location))
        return fs.get_file_info(path).type == pafs.FileType.File
    return os.path.isfile(location)


def stat(location: Location) -> tuple[int, int, int, int] | None:
    """(size, mtime ns, inode, ctime ns) of a file or object (inode and ctime 0 for objects);
    None when it cannot be had."""
    try:
        if is_uri(location):
            fs, path = filesystem_for(str(location))
            info = fs.get_file_info(path)
            if info.type != pafs.FileType.File or info.mtime_ns is None or info.size is None:
                return None
            return info.size, info.mtime_ns, 0, 0
        st = os.stat(location)
        return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns
    except OSError:
        return None


def list_file_stats(prefix: str) -> dict[str, tuple[int, int, int, int] | None]:
    """URI -> ``stat()`` for every object under a URI prefix, from the listing itself (no request
    per object); None where the listing does not say."""
    fs, path = filesystem_for(prefix)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return {
        _uri_of(prefix, fs, i.path): (i.size, i.mtime_ns, 0, 0) if i.size is not None and i.mtime_ns is not None else None
        for i in infos
        if i.type == pafs.FileType.File
    }


def list_files(prefix: Location, recursive: bool = True, pattern: str | None = None) -> list[Any]:
    """Files under a directory or prefix, sorted, as locations of the same kind as ``prefix``
    (URIs for a URI, ``Path`` objects for a local directory).  Nothing when it does not exist.
    ``pattern`` filters on the file name (``fnmatch``, e.g. ``part-*.parquet``)."""
    if is_uri(prefix):
        fs, path = filesystem_for(str(prefix))
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
        found = [_uri_of(str(prefix), fs, i.path) for i in infos if i.type == pafs.FileType.File]
    else:
        root = Path(prefix)
        if not root.is_dir():
            return []
        found = [str(p) for p in (root.rglob("*") if recursive else root.iterdir()) if p.is_file()]
    if pattern is not None:
        found = [f for f in found if fnmatch.fnmatchcase(basename(f), pattern)]
    return sorted(found, key=str)


def write_bytes_atomic(location: Location, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write a whole file so that readers see the old content or the new, never a part.

    Local: temporary file (in ``tmp_dir``, same filesystem, or else beside the target), fsync,
    rename, fsync of the directory.  Object store: one upload of the final key (atomic for readers)."""
    if is_uri(location):
        fs, path = filesystem_for(str(location))
        if isinstance(fs, pafs.LocalFileSystem):
            return write_bytes_atomic(path, data, tmp_dir)
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    local = Path(location)
    local.parent.mkdir(parents=True, exist_ok=True)
    if tmp_dir is None:
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.tmp")
    else:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / f"{local.parent.name}-{local.name}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, local)
    fsync_dir(local.parent)


def move(src: Location, dst: Location) -> None:
    """Rename a file (local) or move an object (same store: copy, then delete the source)."""
    if is_uri(src):
        fs, path = filesystem_for(str(src))
        fs.move(path, filesystem_for(str(dst))[1])
        return
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    fsync_dir(Path(src).parent)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: some filesystems refuse directory fsync)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def delete(location: Location, missing_ok: bool = True) -> None:
    """Remove one file or object (a local removal is made durable)."""
    try:
        if is_uri(location):
            fs, path = filesystem_for(str(location))
            fs.delete_file(path)
        else:
            os.unlink(location)
            fsync_dir(Path(location).parent)
    except FileNotFoundError:
        if not missing_ok:
            raise
