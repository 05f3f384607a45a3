"""Rasterization across worker processes, with a per-document time limit and memory guard.

Why not ``concurrent.futures``: a pool there cannot kill one hung task, and one
crashed worker breaks the whole pool.  Here each worker runs one document at a
time; a document that hangs past ``timeout_s`` or kills its worker (segfault in
the PDF library, memory limit) costs only its own row: the worker is replaced
and the run goes on.

What travels back: the pixels through a shared-memory block per worker (a Linux
``memfd`` whose descriptor is passed over the worker's socket; ``pipeline/pageblock.py``), and the
rest of the ``RasterizedDoc`` pickled.  The worker copies each RGB page into the block (one
copy, ~0.8 ms for a 1.2 MP page) and the parent copies it out into its own image
(~0.6 ms); pickling the same page cost 13-16 ms across both processes (bench/raster.py).
The block is reused: the parent has copied a document's pages out before it sends the
worker its next document.  Where ``memfd_create`` is missing (macOS) the pages are
pickled (raw RGB bytes; never a PNG round trip).  The block is anonymous, so nothing
is left behind when a worker is killed.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait

from pipeline.errors import CouldNotStart, RasterError
from pipeline.pageblock import BLOCK_BYTES, PageBlock
from pipeline.rasterize import RasterSettings, rasterize
from pipeline.records import Document, ErrorType, RasterizedDoc
from pipeline.words import PackedWords, pack_words, unpack_words

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

Payload = tuple[str, RasterizedDoc] | tuple[str, str, str]


def encode_result(out: RasterizedDoc | RasterError) -> Payload:
    """What crosses a process boundary (worker pipe, Ray task): ``("ok", RasterizedDoc)`` or
    ``("err", error_type, message)``."""
    if isinstance(out, RasterError):
        return ("err", out.error_type.value, out.message)
    for p in out.pages:
        if p.words:
            p.words = pack_words(p.words)  # type: ignore[assignment]  # columns: cheaper to pickle than Words
    return ("ok", out)


def decode_result(payload: Payload) -> RasterizedDoc | RasterError:
    if payload[0] == "ok":
        out: RasterizedDoc = payload[1]  # type: ignore[assignment]
        for p in out.pages:
            if isinstance(p.words, PackedWords):
                p.words = unpack_words(p.words)
        return out
    return RasterError(ErrorType(payload[1]), payload[2])  # type: ignore[misc]


def encode_outcome(o: Outcome) -> tuple[Document, Payload]:
    return o[0], encode_result(o[1])


def decode_outcome(o: tuple[Document, Payload]) -> Outcome:
    return o[0], decode_result(o[1])


def _worker_main(
    conn: Connection, settings: RasterSettings, memory_limit: int | None, func: RasterFunc, block_bytes: int | None
) -> None:
    import signal

    # Ctrl-C and SIGTERM are the parent's to handle: it finishes the batch, then stops these workers.  Both
    # reach the whole process group (a terminal, systemd, `timeout`, Kubernetes); a worker that died of one
    # would get the document it was rasterizing blamed (worker_crashed).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    blocks: list[PageBlock] = []
    if block_bytes:
        from multiprocessing.reduction import recv_handle

        blocks = [PageBlock(recv_handle(conn), block_bytes) for _ in range(DEPTH)]
    if memory_limit:
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
        except (ImportError, ValueError, OSError):
            pass
    conn.send(READY)  # started: the parent may now blame this process for what it is sent
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        doc, slot = msg
        try:
            _, out = func(doc, settings)
        except MemoryError:
            out = RasterError(ErrorType.TOO_LARGE, "out of memory while rasterizing (worker memory limit)")
        except Exception as e:
            out = RasterError(ErrorType.CORRUPT, f"unexpected {type(e).__name__}: {e}")
        if not isinstance(out, RasterError) and blocks:
            try:
                blocks[slot].put(out)
            except (OSError, ValueError, MemoryError):  # no room for the block: these pages go pickled
                pass
        try:
            conn.send(encode_result(out))
        except MemoryError:
            conn.send(encode_result(RasterError(ErrorType.TOO_LARGE, "out of memory while sending pages")))


READY = ("ready",)
START_TIMEOUT_S = 300.0  # a worker still importing after this long is taken for stuck

UNGUARDED_MAIN_HINT = (
    "if you call run_job from a script, put the call under `if __name__ == \"__main__\":` (worker processes "
    "import the main module, and an unguarded call runs the job again inside each of them)"
)

DEPTH = 2  # documents queued per worker: it starts the next one while the parent copies the last one out


class _Worker:
    """One rasterizing process, up to ``DEPTH`` documents in flight (done in order), one page block
    per in-flight slot: the worker fills slot k+1 while the parent copies slot k out."""

    def __init__(
        self,
        ctx: mp.context.BaseContext,
        settings: RasterSettings,
        memory_limit: int | None,
        func: RasterFunc,
        block_bytes: int = BLOCK_BYTES,
    ):
        parent, child = ctx.Pipe(duplex=True)
        self.conn = parent
        blocks = [PageBlock.create(block_bytes) for _ in range(DEPTH)]
        self.blocks: list[PageBlock] | None = blocks if all(b is not None for b in blocks) else None  # type: ignore[assignment]
        if self.blocks is None:
            for b in blocks:
                if b is not None:
                    b.close()
        self.queue: deque[tuple[Document, int]] = deque()  # in flight, oldest (the one being made) first
        self.next_slot = 0
        self.started = 0.0  # when the oldest in-flight document started
        shared = block_bytes if self.blocks is not None else None
        self.proc = ctx.Process(target=  # type: ignore[attr-defined]
            _worker_main, args=(child, settings, memory_limit, func, shared), daemon=True)
        try:
            self.proc.start()
            child.close()
            if self.blocks is not None:
                from multiprocessing.reduction import send_handle

                for b in self.blocks:
                    send_handle(parent, b.fd, self.proc.pid)
        except BaseException:
            child.close()
            self.stop(kill=True)  # no half-started worker, no leaked blocks
            raise

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until the process says it started; ``CouldNotStart`` when it dies (or hangs) before that."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.conn.poll(0.1):
                    if self.conn.recv() == READY:
                        return
                    break
            except (EOFError, OSError):
                break
            if not self.proc.is_alive() and not self.conn.poll(0):
                break
        self.proc.join(timeout=1)
        code = self.proc.exitcode
        how = f"exited with code {code}" if code is not None else "did not answer"
        raise CouldNotStart(
            f"the rasterizing worker processes cannot start: one {how} "
            f"before taking a document; {UNGUARDED_MAIN_HINT}; otherwise run with rasterize.workers = 1 to see the error"
        )

    @property
    def head(self) -> Document | None:
        return self.queue[0][0] if self.queue else None

    def send(self, doc: Document) -> None:
        if not self.queue:
            self.started = time.monotonic()
        self.conn.send((doc, self.next_slot))
        self.queue.append((doc, self.next_slot))
        self.next_slot = (self.next_slot + 1) % DEPTH

    def receive(self, out: RasterizedDoc | None) -> Document:
        """The oldest document is done: copy its pages out of its block; the next one starts its clock."""
        doc, slot = self.queue.popleft()
        if out is not None and self.blocks is not None:
            self.blocks[slot].take(out)
        self.started = time.monotonic()
        return doc

    def stop(self, kill: bool = False) -> None:
        if self.proc.pid is not None:  # started
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
        for b in self.blocks or []:
            b.close()
        self.blocks = None


class RasterPool:
    """``imap_unordered`` over documents; each worker has up to ``DEPTH`` documents queued."""

    def __init__(
        self,
        settings: RasterSettings,
        workers: int,
        timeout_s: float = 120.0,
        memory_limit_bytes: int | None = None,
        start_method: str = "forkserver",
        func: RasterFunc = rasterize_one,
        block_bytes: int = BLOCK_BYTES,
    ):
        self.func = func
        self.block_bytes = block_bytes
        self.settings = settings
        self.n = max(1, workers)
        self.timeout_s = timeout_s
        self.memory_limit = memory_limit_bytes
        methods = mp.get_all_start_methods()
        self.ctx = mp.get_context(start_method if start_method in methods else "spawn")
        self.workers: list[_Worker] = []
        self.restarts = 0

    def __enter__(self) -> RasterPool:
        try:
            for _ in range(self.n):
                self.workers.append(self._new_worker())
            for w in self.workers:
                w.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _new_worker(self) -> _Worker:
        return _Worker(self.ctx, self.settings, self.memory_limit, self.func, self.block_bytes)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for w in self.workers:
            w.stop(kill=bool(w.queue))
        self.workers = []

    def _replace(self, w: _Worker) -> tuple[_Worker, list[Document]]:
        """Kill ``w`` and start another; returns the new worker and the documents ``w`` had queued
        behind its current one (not started, so not at fault: they go back to the front of the line)."""
        queued = [d for d, _ in list(w.queue)[1:]]
        w.stop(kill=True)
        self.restarts += 1
        nw = self._new_worker()
        self.workers[self.workers.index(w)] = nw  # its READY is skipped by imap's reader
        return nw, queued

    def imap(self, docs: Iterable[Document]) -> Iterator[Outcome]:
        """(document, pages or error) for every document in ``docs``, in the order they finish."""
        yield from _Stream(self, docs).run()


class _Stream:
    """One ``RasterPool.imap``: feeds the pool's workers and judges them (answered, crashed, timed out)."""

    def __init__(self, pool: RasterPool, docs: Iterable[Document]):
        self.pool = pool
        self.pending = iter(docs)
        self.retry: deque[Document] = deque()  # queued behind a document that killed its worker
        self.exhausted = False
        self.idle_deaths = 0  # workers found dead without a document to blame, since the last result

    def next_doc(self) -> Document | None:
        if self.retry:
            return self.retry.popleft()
        if self.exhausted:
            return None
        doc = next(self.pending, None)
        if doc is None:
            self.exhausted = True
        return doc

    def replace_idle(self, w: _Worker) -> _Worker:
        self.idle_deaths += 1
        if self.idle_deaths > 2 * self.pool.n + 2:
            raise RuntimeError(
                f"rasterizing processes keep dying before they are given a document "
                f"(last exit code {w.proc.exitcode}): see the log above; check memory limits"
            )
        return self.pool._replace(w)[0]

    def feed(self) -> None:
        # Fill every worker to one document before any gets a second: spreads a short tail.
        workers = self.pool.workers
        for depth in range(1, DEPTH + 1):
            for i in range(len(workers)):
                w = workers[i]
                if len(w.queue) >= depth:
                    continue
                doc = self.next_doc()
                if doc is None:
                    return
                if not w.queue and not w.proc.is_alive():  # died while idle (OOM killer, say)
                    w = self.replace_idle(w)
                try:
                    w.send(doc)
                except (BrokenPipeError, OSError):
                    self.retry.appendleft(doc)
                    if not w.queue:
                        self.replace_idle(w)  # nothing of ours in it: replace now
                    return  # else its sentinel reports it, blaming its current document

    def results(self, w: _Worker, out: list[Outcome]) -> None:
        """Every answer ``w`` has already sent (it may have answered, then died on its next document)."""
        while w.queue:
            try:
                if not w.conn.poll(0):
                    return
                msg = w.conn.recv()
            except (EOFError, OSError):
                return
            if msg == READY:
                continue
            self.idle_deaths = 0
            result = decode_result(msg)
            out.append((w.receive(None if isinstance(result, RasterError) else result), result))

    def judge(self, w: _Worker, out: list[Outcome]) -> None:
        """Collect ``w``'s answers; a worker that died or ran over the time limit costs its current
        document a row and is replaced, the documents queued behind it go back to the front."""
        self.results(w, out)
        if not w.queue:
            return
        doc = w.head
        assert doc is not None
        if not w.proc.is_alive():
            self.results(w, out)  # anything sent just before it died
            if not w.queue:
                return
            doc = w.head
            assert doc is not None
            code = w.proc.exitcode
            error = RasterError(
                ErrorType.WORKER_CRASHED,
                f"rasterizing process died (exit code {code}); the file may crash the PDF/image library",
            )
        elif time.monotonic() - w.started >= self.pool.timeout_s:
            error = RasterError(ErrorType.TIMEOUT, f"rasterizing took longer than {self.pool.timeout_s:g}s and was stopped")
        else:
            return
        _, queued = self.pool._replace(w)
        self.retry.extendleft(reversed(queued))
        out.append((doc, error))

    def run(self) -> Iterator[Outcome]:
        self.feed()
        while True:
            busy = [w for w in self.pool.workers if w.queue]
            if not busy:
                if self.exhausted and not self.retry:
                    return
                self.feed()
                continue
            deadline = min(w.started + self.pool.timeout_s for w in busy)
            waitables: list[object] = [w.conn for w in busy] + [w.proc.sentinel for w in busy]
            wait(waitables, timeout=  # type: ignore[arg-type]
                 max(0.0, deadline - time.monotonic()))
            # Decide everything from the state now, then hand the outcomes over: the consumer may hold
            # this generator for a long time at each yield (a full queue while the engine works), and
            # no worker may be judged on what was true before that.
            outcomes: list[Outcome] = []
            for w in busy:
                self.judge(w, outcomes)
            self.feed()
            yield from outcomes


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
