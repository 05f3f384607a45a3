"""Shared helpers for the benchmarks: cached synthetic corpora, instant/sleeping engines, timing, RSS sampling.

Everything here is bench-only; nothing in ``pipeline/`` depends on it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Shared by every checkout on the machine; DOCEXTRACT_BENCH_CACHE gives a run its own (A/B against another
#: checkout while other sessions bench too: same corpora for both sides, nobody regenerating them underneath).
CACHE = Path(os.environ.get("DOCEXTRACT_BENCH_CACHE", "/tmp/docextract-bench"))

#: A PDF-heavy backlog: more scanned than digital PDFs, plus scans as TIFF/JPEG and receipts (PNG / phone photos).
BACKLOG_MIX: dict[str, float] = {
    "pdf-scan": 0.36,
    "pdf-digital": 0.24,
    "tiff-scan": 0.10,
    "jpeg-scan": 0.10,
    "png-receipt": 0.10,
    "jpeg-photo-receipt": 0.10,
}
PDF_VARIANTS = ("pdf-digital", "pdf-scan")


@dataclass(frozen=True)
class CorpusDoc:
    """The SynthDoc fields the benches use (path/kind/variant/pages) plus the truth for the instant engine."""

    path: Path
    kind: str
    variant: str
    pages: int
    truth: dict[str, Any]


def _import_generate(retries: int = 6, wait_s: float = 60.0) -> Callable[..., Any]:
    """``pipeline.synth.generate``; another helper may be editing synth.py, so retry a few times."""
    import importlib

    last: BaseException | None = None
    for attempt in range(retries):
        try:
            mod = importlib.reload(sys.modules["pipeline.synth"]) if "pipeline.synth" in sys.modules else importlib.import_module("pipeline.synth")
            return mod.generate
        except Exception as e:  # noqa: BLE001 - a half-edited module can raise anything
            last = e
            print(f"[bench] pipeline.synth not importable ({e!r}); retry {attempt + 1}/{retries} in {wait_s:.0f}s", file=sys.stderr)
            time.sleep(wait_s)
    raise RuntimeError(f"pipeline.synth stayed broken: {last!r}")


def corpus(count: int, seed: int = 0, mix: dict[str, float] | None = None, name: str | None = None) -> list[CorpusDoc]:
    """Generate (once; cached under /tmp/docextract-bench/corpus-<seed>[-name]) ``count`` synthetic documents."""
    mix = dict(mix or BACKLOG_MIX)
    out = CACHE / (f"corpus-{seed}" + (f"-{name}" if name else ""))
    marker = out / "bench-corpus.json"
    key = {"count": count, "seed": seed, "mix": mix}
    if marker.exists():
        meta = json.loads(marker.read_text())
        if meta["key"] == key and all(Path(d["path"]).exists() for d in meta["docs"]):
            return [CorpusDoc(Path(d["path"]), d["kind"], d["variant"], d["pages"], d["truth"]) for d in meta["docs"]]
    generate = _import_generate()
    t0 = time.perf_counter()
    if out.exists():
        import shutil

        shutil.rmtree(out)
    docs = generate(out, count, seed=seed, mix=mix, workers=os.cpu_count() or 1)
    rows = [{"path": str(d.path), "kind": d.kind, "variant": d.variant, "pages": d.pages, "truth": d.truth} for d in docs]
    marker.write_text(json.dumps({"key": key, "docs": rows}))
    print(f"[bench] generated {count} documents in {out} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    return [CorpusDoc(Path(r["path"]), r["kind"], r["variant"], r["pages"], r["truth"]) for r in rows]


def write_manifest(paths: Iterable[Path | str], dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("".join(f"{p}\n" for p in paths))
    return dest


def documents(paths: Sequence[Path | str]) -> list[Any]:
    """``pipeline.records.Document`` for each path (same identification as ``discover``), order kept."""
    from pipeline.discover import identify

    out = []
    for p in paths:
        doc, failure = identify(str(p))
        if failure is not None:
            raise RuntimeError(f"{p}: {failure.message}")
        out.append(doc)
    return out


# --------------------------------------------------------------------------- engines


def _fallback_invoice(truths: Iterable[dict[str, Any]]) -> dict[str, Any]:
    for t in truths:
        if "invoice_number" in t:
            return t
    from tests.helpers import invoice_truth

    return invoice_truth()


class InstantEngine:
    """Answers at once with the synth ground truth (by doc_id), or any valid invoice for non-invoice documents.

    Like ``tests.scripted_engine.ScriptedEngine`` (same Generation fields) but it keeps no reference to the
    requests: ScriptedEngine appends every batch (with its page images) to ``self.batches``, which would make
    memory grow with the run and distort time and RSS measurements.
    """

    name = "instant"

    def __init__(self, docs: Iterable[CorpusDoc] = ()):
        import hashlib

        docs = list(docs)
        self.answers: dict[str, str] = {}
        for d in docs:
            if d.kind == "invoice":
                self.answers[hashlib.sha256(d.path.read_bytes()).hexdigest()] = json.dumps(d.truth, ensure_ascii=False)
        self.default = json.dumps(_fallback_invoice(d.truth for d in docs), ensure_ascii=False)
        self.calls = 0
        self.requests = 0
        self.last_call = 0.0

    def _answer(self, requests: Sequence[Any]) -> list[Any]:
        from pipeline.records import Generation

        out = []
        for r in requests:
            text = self.answers.get(r.doc_id, self.default)
            out.append(Generation(r.doc_id, text, "stop", prompt_tokens=100 + 50 * len(r.images), output_tokens=len(text) // 3))
        return out

    def generate(self, requests: Sequence[Any]) -> list[Any]:
        self.calls += 1
        self.requests += len(requests)
        self.last_call = time.perf_counter()
        return self._answer(requests)

    def close(self) -> None:
        pass


class SleepEngine(InstantEngine):
    """Simulated GPU: sleeps ``per_batch_s + per_request_s * n + per_page_s * pages`` per call; records busy spans."""

    name = "sleep"

    def __init__(self, docs: Iterable[CorpusDoc], per_batch_s: float, per_request_s: float, per_page_s: float):
        super().__init__(docs)
        self.per_batch_s, self.per_request_s, self.per_page_s = per_batch_s, per_request_s, per_page_s
        self.spans: list[tuple[float, float, int]] = []  # (enter, exit, requests)

    def generate(self, requests: Sequence[Any]) -> list[Any]:
        t0 = time.perf_counter()
        pages = sum(len(r.images) for r in requests)
        time.sleep(self.per_batch_s + self.per_request_s * len(requests) + self.per_page_s * pages)
        out = super().generate(requests)
        self.spans.append((t0, time.perf_counter(), len(requests)))
        return out


# --------------------------------------------------------------------------- config / output


def job_config(**overrides: Any) -> Any:
    from pipeline.config import load_config

    base = {"run.progress": False, "rasterize.workers": 2}
    base.update(overrides)
    return load_config(None, base)


def quick_flag(description: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="~1 minute smoke version")
    return ap.parse_args()


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine_line() -> str:
    import platform

    load = os.getloadavg()
    return (
        f"machine: {os.cpu_count()} cores, python {platform.python_version()}, "
        f"loadavg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}"
    )


# --------------------------------------------------------------------------- memory


class RssSampler:
    """Peak RSS of this process plus all its descendants (psutil), sampled every ``interval_s``."""

    def __init__(self, interval_s: float = 0.05):
        import psutil

        self.proc = psutil.Process()
        self.interval_s = interval_s
        self.peak_total = 0
        self.peak_main = 0
        self.peak_children = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        import psutil

        main = self.proc.memory_info().rss
        kids = 0
        for c in self.proc.children(recursive=True):
            try:
                kids += c.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        self.peak_main = max(self.peak_main, main)
        self.peak_children = max(self.peak_children, kids)
        self.peak_total = max(self.peak_total, main + kids)
        self.samples += 1

    def _run(self) -> None:
        SAMPLERS.add(threading.get_native_id())
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def mib(n: float) -> float:
    return n / (1 << 20)


#: Native ids of the bench's sampling threads: ``TreeCpu`` leaves their CPU out of the main process's
#: (each scan walks every process on the machine, so it grows with the other tenants and with wall time).
SAMPLERS: set[int] = set()


class TreeCpu:
    """CPU seconds (user + system) used by this process and all its descendants while the block runs,
    less the bench's own sampling threads (this one and an ``RssSampler``).

    Descendants (rasterizing workers, forked by the forkserver) are sampled every ``interval_s`` and the last
    reading of each pid is kept, so at most one interval of a worker's time is missed.  On a shared machine this
    is steadier than wall time: other tenants stretch the wall clock, not the CPU work done.
    """

    def __init__(self, interval_s: float = 0.1):
        import psutil

        self.proc = psutil.Process()
        self.interval_s = interval_s
        self.kids: dict[int, float] = {}
        self.main = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        for c in self.proc.children(recursive=True):
            try:
                t = c.cpu_times()
                self.kids[c.pid] = max(self.kids.get(c.pid, 0.0), t.user + t.system - self._base.get(c.pid, 0.0))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)
        self._own = time.thread_time()  # this sampler's own CPU (psutil scans every process on the machine)

    def __enter__(self) -> TreeCpu:
        import psutil

        self._base: dict[int, float] = {}
        for c in self.proc.children(recursive=True):  # e.g. a forkserver left from an earlier pool
            try:
                t = c.cpu_times()
                self._base[c.pid] = t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        t = self.proc.cpu_times()
        self._main0 = t.user + t.system
        self._samplers0 = self._samplers_cpu()
        self._own = 0.0
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        t = self.proc.cpu_times()
        self.main = t.user + t.system - self._main0 - self._own - (self._samplers_cpu() - self._samplers0)

    def _samplers_cpu(self) -> float:
        """CPU of the bench's own live sampling threads (an ``RssSampler`` around this block)."""
        return sum(t.user_time + t.system_time for t in self.proc.threads() if t.id in SAMPLERS)

    @property
    def children(self) -> float:
        return sum(self.kids.values())

    @property
    def total(self) -> float:
        return self.main + self.children
