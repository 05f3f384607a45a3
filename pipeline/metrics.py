"""``--metrics-file PATH`` (``run.metrics_file``): a run's figures in Prometheus' text exposition format.

Written once at the end of every run, whatever its end (ok, too many failures, interrupted, engine died,
output not writable, could not start, crashed), atomically (a temporary file beside it, then a rename), as
node_exporter's textfile collector requires of batch jobs: point the path into the collector's directory
(``--collector.textfile.directory``), named ``*.prom``.  Every metric is a gauge describing the last run;
``docextract_last_success_timestamp_seconds`` is carried over from the previous file (or, without one,
from the output's ``runs/*.json``) when the run did not succeed, so a failing night keeps the time of the
last good one.  One label on every series, ``output`` (the output location): two jobs on one host (say
invoices and receipts) write two files without clashing series, and a job's series never change name.
The figures come from the run record that ``run.json`` holds (``pipeline.manifest``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline import fs
from pipeline.config import JobConfig
from pipeline.errors import CouldNotStart
from pipeline.records import ErrorType
from pipeline.store import now_utc
from pipeline.summary import EXIT_COULD_NOT_START, EXIT_OK, EXIT_UNEXPECTED, RUNNING, STATUS

log = logging.getLogger(__name__)

PREFIX = "docextract_"
LAST_SUCCESS = PREFIX + "last_success_timestamp_seconds"
_LAST_SUCCESS_LINE = re.compile(rf"^{LAST_SUCCESS}(?:{{[^}}]*}})?\s+(\S+)\s*$", re.MULTILINE)


def _ts(iso: object) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return dt.datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def succeeded(record: dict[str, Any]) -> bool:
    """A run record (``run.json``) of a run that ended with exit code 0, in any format version."""
    if "format_version" not in record:  # version 1: "completed" covered exit codes 0 and 3
        return record.get("status") == "completed" and record.get("exit_code") == 0
    return record.get("status") == STATUS[EXIT_OK]


def finished_ts(record: dict[str, Any]) -> float | None:
    return _ts(record.get("finished_at")) or _ts(record.get("updated_at"))


def last_success_in_history(out_dir: Path | str, skip_run_id: object = None) -> float | None:
    """The end time of the newest successful run in ``OUT/runs/*.json`` (newest first: run ids start
    with their start time), None when there is none or the history cannot be read."""
    try:
        files = fs.list_files(fs.join(out_dir, "runs"), recursive=False, pattern="*.json")
    except (OSError, ValueError, pa.ArrowException):
        return None
    for f in sorted(files, key=lambda x: fs.basename(x), reverse=True):
        try:
            record = json.loads(fs.read_bytes(f))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("run_id") != skip_run_id and succeeded(record):
            return finished_ts(record)
    return None


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def output_label(out_dir: Path | str) -> str:
    """The output location as a label value: a local path made absolute, a URI without any
    user:password@ part."""
    if not fs.is_uri(out_dir):
        return str(Path(out_dir).absolute())
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1", str(out_dir))


class _Writer:
    def __init__(self, output: str):
        self.output = _label(output)
        self.lines: list[str] = []

    def family(self, name: str, help_text: str, samples: dict[str, float] | float, label: str = "") -> None:
        """One gauge: a single value, or values by ``label``."""
        self.lines += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} gauge"]
        items = samples.items() if isinstance(samples, dict) else [("", samples)]
        for key, value in items:
            extra = f',{label}="{_label(key)}"' if label else ""
            self.lines.append(f'{PREFIX}{name}{{output="{self.output}"{extra}}} {_num(value)}')

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def _documents(counts: dict[str, Any]) -> dict[str, float]:
    return {
        "extracted": counts.get("succeeded", 0),
        "failed": counts.get("processing_failed", 0),
        "rejected": counts.get("rejected", 0),
        "skipped": counts.get("skipped", 0),
        "pending": counts.get("pending", 0),
    }


def _document_families(w: _Writer, record: dict[str, Any]) -> None:
    counts = record["counts"]
    by_type = counts.get("failed_by_type", {})
    w.family("documents", "Documents of the last run by outcome (they add up to the documents found).",
             _documents(counts), "outcome")
    w.family("failures", "Failure rows the last run wrote, by error_type (README: Failure types).",
             {t.value: by_type.get(t.value, 0) for t in ErrorType}, "error_type")
    w.family("pages", "Pages the last run rasterized and sent.", counts.get("pages", 0))
    throughput = record.get("throughput", {})
    w.family("tokens", "Tokens of the last run, by kind.",
             {"prompt": throughput.get("prompt_tokens", 0), "output": throughput.get("output_tokens", 0)}, "kind")
    w.family("engine_busy_ratio", "Fraction of the last run's wall time the engine spent generating.",
             float(throughput.get("engine_busy_fraction", 0.0)))
    w.family("failure_rate", "Processing failures over accepted documents in the last run.",
             float(record.get("failure_rate", 0.0)))
    w.family("reject_rate", "Input rejects over processed documents in the last run.",
             float(record.get("reject_rate", 0.0)))


def render(record: dict[str, Any], output: str, last_success: float | None) -> str:
    """The metrics file for one run record (``run.json``'s content, or the stub of a run that never
    got that far)."""
    w = _Writer(output)
    end = finished_ts(record) or time.time()
    w.family("last_run_timestamp_seconds", "When the last run ended (Unix time).", end)
    if last_success is not None:
        w.family("last_success_timestamp_seconds", "When the last run that exited 0 ended (Unix time).", last_success)
    w.family("run_duration_seconds", "Wall time of the last run.", float(record.get("duration_s") or 0.0))
    code = record.get("exit_code")
    w.family("run_exit_code", "Exit code of the last run (0 ok, 2 could not start, 3 too many failures, "
             "4 interrupted, 5 engine died, 6 output not writable, 1 unexpected error).",
             int(code) if isinstance(code, int) else EXIT_UNEXPECTED)
    if isinstance(record.get("counts"), dict):
        _document_families(w, record)
    for key, text in (("max_failure_rate", "run.max_failure_rate: exit 3 above it."),
                      ("max_reject_rate", "run.max_reject_rate: exit 3 above it.")):
        if isinstance(record.get(key), int | float):
            w.family(key, text, float(record[key]))
    return w.text()


class MetricsFile:
    """Where one run writes its metrics, and what it knows before it starts (for a run that never does)."""

    def __init__(self, path: Path, out_dir: Path | str):
        self.path, self.out_dir = path, out_dir
        self.started_at, self.t_start = now_utc(), time.perf_counter()

    @classmethod
    def for_run(cls, path: str | Path | None, out_dir: Path | str) -> MetricsFile | None:
        """None without a path; ``CouldNotStart`` when it cannot be written (checked before the work)."""
        if not path:
            return None
        p = Path(path)
        if fs.is_uri(str(path)) or p.is_dir() or not p.parent.is_dir():
            raise CouldNotStart(f"metrics file {path}: must be a file path in an existing local directory "
                                "(node_exporter's textfile collector directory)")
        if not p.name.endswith(".prom"):
            log.warning("metrics file %s: node_exporter's textfile collector reads only *.prom files", p)
        return cls(p, out_dir)

    def last_success(self, record: dict[str, Any]) -> float | None:
        if succeeded(record):
            return finished_ts(record)
        try:
            m = _LAST_SUCCESS_LINE.search(self.path.read_text(encoding="utf-8"))
            if m:
                return float(m.group(1))
        except (OSError, ValueError):
            pass
        return last_success_in_history(self.out_dir, record.get("run_id"))

    def write(self, record: dict[str, Any]) -> None:
        """Write the metrics of a run record; a failure to write is logged, never the run's failure
        (a stale file is what the stale-success alert is for)."""
        try:
            text = render(record, output_label(self.out_dir), self.last_success(record))
            fs.write_bytes_atomic(self.path, text.encode())
        except OSError as e:
            log.error("could not write the metrics file %s: %s", self.path, e)

    def write_failed(self, record: dict[str, Any] | None, exc: BaseException, config: JobConfig | None) -> None:
        """The metrics of a run that raised: could not start (exit 2, no record) or crashed (exit 1)."""
        if record is None or record.get("status") == RUNNING:
            code = EXIT_COULD_NOT_START if isinstance(exc, CouldNotStart) and record is None else EXIT_UNEXPECTED
            record = dict(record or {}, **self._stub(code, exc, config))
        self.write(record)

    def _stub(self, code: int, exc: BaseException, config: JobConfig | None) -> dict[str, Any]:
        thresholds = {} if config is None else {
            "max_failure_rate": config.run.max_failure_rate, "max_reject_rate": config.run.max_reject_rate}
        return {
            "status": STATUS[code],
            "exit_code": code,
            "error": str(exc) if isinstance(exc, CouldNotStart) else f"{type(exc).__name__}: {exc}",
            "started_at": self.started_at.isoformat(),
            "finished_at": now_utc().isoformat(),
            "duration_s": round(time.perf_counter() - self.t_start, 3),
            **thresholds,
        }
