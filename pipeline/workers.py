"""Rasterization across worker processes, with a per-document time limit and memory guard.

Why not ``concurrent.futures``: a pool there cannot kill one hung task, and one
crashed worker breaks the whole pool.  Here each worker runs one document at a
time; a document that hangs past ``timeout_s`` or kills its worker (segfault in
the PDF library, memory limit) costs only its own row: the worker is replaced
and the run goes on.

What travels back: ``RasterizedDoc`` pickled, i.e. raw RGB pixels (Pillow pickles
an image as its raw bytes); no PNG round trip.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait

from pipeline.rasterize import RasterError, RasterSettings, rasterize
from pipeline.records import Document, ErrorType, RasterizedDoc

Outcome = tuple[Document, RasterizedDoc | RasterError]


def rasterize_one(doc: Document, settings: RasterSettings) -> Outcome:
    try:
        return doc, rasterize(doc, settings)
    except RasterError as e:
        return doc, e
    except MemoryError:
        return doc, RasterError(ErrorType.TOO_LARGE, "out of memory while rasterizing")
    except Exception as e:  # a bug or an unexpected library error: still only this document's row
        return doc, RasterError(ErrorType.CORRUPT, f"unexpected {type(e).__name__}: {e}")


RasterFunc = Callable[[Document, RasterSettings], Outcome]


def _worker_main(conn: Connection, settings: RasterSettings, memory_limit: int | None, func: RasterFunc) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it finishes the batch
    if memory_limit:
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
        except (ImportError, ValueError, OSError):
            pass
    while True:
        try:
            doc = conn.recv()
        except EOFError:
            return
        if doc is None:
            return
        try:
            _, out = func(doc, settings)
        except MemoryError:
            out = RasterError(ErrorType.TOO_LARGE, "out of memory while rasterizing (worker memory limit)")
        except Exception as e:
            out = RasterError(ErrorType.CORRUPT, f"unexpected {type(e).__name__}: {e}")
        if isinstance(out, RasterError):
            payload: object = ("err", out.error_type.value, out.message)
        else:
            payload = ("ok", out)
        try:
            conn.send(payload)
        except MemoryError:
            conn.send(("err", ErrorType.TOO_LARGE.value, "out of memory while sending pages"))


class _Worker:
    def __init__(
        self, ctx: mp.context.BaseContext, settings: RasterSettings, memory_limit: int | None, func: RasterFunc
    ):
        parent, child = ctx.Pipe(duplex=True)
        self.conn = parent
        self.proc = ctx.Process(target=_worker_main, args=(child, settings, memory_limit, func), daemon=True)
        self.proc.start()
        child.close()
        self.doc: Document | None = None
        self.started = 0.0

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


class RasterPool:
    """``imap_unordered`` over documents; at most ``workers`` documents in flight."""

    def __init__(
        self,
        settings: RasterSettings,
        workers: int,
        timeout_s: float = 120.0,
        memory_limit_bytes: int | None = None,
        start_method: str = "forkserver",
        func: RasterFunc = rasterize_one,
    ):
        self.func = func
        self.settings = settings
        self.n = max(1, workers)
        self.timeout_s = timeout_s
        self.memory_limit = memory_limit_bytes
        methods = mp.get_all_start_methods()
        self.ctx = mp.get_context(start_method if start_method in methods else "spawn")
        self.workers: list[_Worker] = []
        self.restarts = 0

    def __enter__(self) -> "RasterPool":
        self.workers = [_Worker(self.ctx, self.settings, self.memory_limit, self.func) for _ in range(self.n)]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for w in self.workers:
            w.stop(kill=w.doc is not None)
        self.workers = []

    def _replace(self, w: _Worker) -> _Worker:
        w.stop(kill=True)
        self.restarts += 1
        nw = _Worker(self.ctx, self.settings, self.memory_limit, self.func)
        self.workers[self.workers.index(w)] = nw
        return nw

    def imap(self, docs: Iterable[Document]) -> Iterator[Outcome]:
        pending = iter(docs)
        exhausted = False
        idle: deque[_Worker] = deque(self.workers)

        def feed() -> None:
            nonlocal exhausted
            while idle and not exhausted:
                doc = next(pending, None)
                if doc is None:
                    exhausted = True
                    return
                w = idle.popleft()
                if not w.proc.is_alive():  # died while idle (OOM killer, say): replace it first
                    w = self._replace(w)
                w.doc, w.started = doc, time.monotonic()
                try:
                    w.conn.send(doc)
                except (BrokenPipeError, OSError):
                    w = self._replace(w)
                    w.doc, w.started = doc, time.monotonic()
                    w.conn.send(doc)

        feed()
        while True:
            busy = [w for w in self.workers if w.doc is not None]
            if not busy:
                if exhausted:
                    return
                feed()
                continue
            now = time.monotonic()
            deadline = min(w.started + self.timeout_s for w in busy)
            waitables: list[object] = [w.conn for w in busy] + [w.proc.sentinel for w in busy]
            ready = wait(waitables, timeout=max(0.0, deadline - now))
            for w in list(busy):
                doc = w.doc
                assert doc is not None
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        msg = None
                    if msg is not None:
                        w.doc = None
                        idle.append(w)
                        if msg[0] == "ok":
                            yield doc, msg[1]
                        else:
                            yield doc, RasterError(ErrorType(msg[1]), msg[2])
                        continue
                if w.proc.sentinel in ready or not w.proc.is_alive():
                    code = w.proc.exitcode
                    nw = self._replace(w)
                    idle.append(nw)
                    yield doc, RasterError(
                        ErrorType.WORKER_CRASHED,
                        f"rasterizing process died (exit code {code}); the file may crash the PDF/image library",
                    )
                elif time.monotonic() - w.started >= self.timeout_s:
                    nw = self._replace(w)
                    idle.append(nw)
                    yield doc, RasterError(
                        ErrorType.TIMEOUT, f"rasterizing took longer than {self.timeout_s:g}s and was stopped"
                    )
            feed()


def rasterize_stream(
    docs: Iterable[Document],
    settings: RasterSettings,
    workers: int,
    timeout_s: float = 120.0,
    memory_limit_bytes: int | None = None,
    func: RasterFunc = rasterize_one,
) -> Iterator[Outcome]:
    """Rasterize in ``workers`` processes (or in this process when ``workers == 1``).

    ``func`` must be a module-level function (it is sent to the worker processes).
    """
    if workers <= 1:
        for doc in docs:
            yield func(doc, settings)
        return
    with RasterPool(settings, workers, timeout_s, memory_limit_bytes, func=func) as pool:
        yield from pool.imap(docs)


def default_memory_limit() -> int | None:
    """Per-worker address-space cap: a quarter of physical memory, at least 2 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    return max(2 << 30, total // 4)
