"""Logging for the command line: every log line on stderr, in one format, at levels set by -q/-v.

stdout is kept for the commands' output (summaries, tables, JSON).  Libraries log at WARNING unless
``-v``; docextract's own loggers (``pipeline.*``, ``schemas.*``, ``docextract.*``) at INFO (``-q``:
WARNING, ``-v``: DEBUG).  Python ``warnings`` become log records (logger ``py.warnings``), and a
library message repeated word for word from the same place is shown once (``-vv`` shows all).

vLLM configures its own handler (writing to stdout) when it is imported, unless
``VLLM_CONFIGURE_LOGGING=0``: :func:`setup_logging` sets that before vLLM is imported, so vLLM's
records reach the root handler installed here like any other library's.  A ``VLLM_LOGGING_CONFIG_PATH``
of your own is left alone (vLLM requires its logging on for it).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Literal, TextIO

LogFormat = Literal["text", "json"]
OWN_LOGGERS = ("pipeline", "schemas", "docextract")
_HANDLER_NAME = "docextract"


def utc_timestamp(record: logging.LogRecord) -> str:
    """ISO-8601 UTC with milliseconds: ``2025-01-31T02:00:04.123Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class _TextFormatter(logging.Formatter):
    """``LEVEL logger: message``; with a UTC timestamp in front when the stream is not a terminal."""

    def __init__(self, timestamps: bool):
        fmt = "%(levelname)s %(name)s: %(message)s"
        super().__init__(("%(asctime)s " + fmt) if timestamps else fmt)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging API)
        return utc_timestamp(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (ISO-8601 UTC), ``level``, ``logger``, ``message`` (+ ``exc``)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": utc_timestamp(record), "level": record.levelname, "logger": record.name}
        doc["message"] = record.getMessage()
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class _LibraryFilter(logging.Filter):
    """Drops a library record identical (logger, place, level, text) to one already shown (unless
    ``once`` is False), and keeps a Python warning to its one line (no quoted source line)."""

    def __init__(self, once: bool) -> None:
        super().__init__()
        self.once = once
        self.seen: set[tuple[str, str, int, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in OWN_LOGGERS:
            return True
        if record.name == "py.warnings":  # logging.captureWarnings: the formatted warning, with its source line
            lines = record.getMessage().rstrip("\n").split("\n")
            record.msg = "\n".join(lines[:-1] if len(lines) > 1 and lines[-1].startswith("  ") else lines)
            record.args = ()
        if not self.once:
            return True
        key = (record.name, record.pathname, record.lineno, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def levels(verbosity: int) -> tuple[int, int]:
    """(docextract's level, libraries' level) for -q (-1), default (0), -v (1), -vv (2)."""
    own = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    libs = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    return own, libs


def setup_logging(verbosity: int = 0, fmt: LogFormat = "text", stream: TextIO | None = None) -> logging.Handler:
    """Send all logging to ``stream`` (default: stderr) in ``fmt``; call before vLLM is imported.

    Replaces the handler a previous call installed (safe to call twice)."""
    stream = stream if stream is not None else sys.stderr
    own, libs = levels(verbosity)
    root = logging.getLogger()
    for h in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(h)
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    tty = hasattr(stream, "isatty") and stream.isatty()
    handler.setFormatter(JsonFormatter() if fmt == "json" else _TextFormatter(timestamps=not tty))
    handler.addFilter(_LibraryFilter(once=verbosity < 2))
    root.addHandler(handler)
    root.setLevel(libs)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(own)
    logging.captureWarnings(True)
    _configure_vllm(libs)
    return handler


def _configure_vllm(level: int) -> None:
    """vLLM reads these when it is imported: no handler of its own (its records propagate to ours)."""
    if os.environ.get("VLLM_LOGGING_CONFIG_PATH"):
        return
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    # Only used if the caller turned vLLM's own logging back on: then at least not on stdout.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", logging.getLevelName(level))
