"""The raster feed: a producer thread drives a stream of rasterized documents (the worker
pool) into a queue bounded in documents *and* pages, so pages for batch k+1 are made while
the engine works on batch k, and memory is bounded by the queue, not by the backlog.

A quarter batch ahead is enough: the batch being assembled is itself a buffer.  While the
engine is the bottleneck the rasterizers only need to stay ahead of it, and while they are, a
longer queue would only hold more pixels (measured: peak RSS 3.1 GiB with a whole batch of
pages queued).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from pipeline.errors import RasterError
from pipeline.records import Document, RasterizedDoc

Outcome = tuple[Document, RasterizedDoc | RasterError]


class PageQueue:
    """Bounded in items and in pages: a backlog of 30-page contracts cannot pile up more pixels than
    one of one-page receipts.  An item over the page limit is still let in when the queue is empty,
    so nothing is ever stuck."""

    def __init__(self, max_items: int, max_pages: int):
        self.max_items, self.max_pages = max_items, max_pages
        self.items: deque[tuple[Any, int]] = deque()
        self.pages = 0
        self.cond = threading.Condition()

    @staticmethod
    def _pages(item: Any) -> int:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], RasterizedDoc):
            return len(item[1].pages)
        return 0

    def put(self, item: Any, timeout: float | None = None, force: bool = False) -> None:
        n = self._pages(item)
        with self.cond:

            def fits() -> bool:
                return not self.items or (len(self.items) < self.max_items and self.pages + n <= self.max_pages)

            if not force and not self.cond.wait_for(fits, timeout):
                raise queue.Full
            self.items.append((item, n))
            self.pages += n
            self.cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        with self.cond:
            if not self.cond.wait_for(lambda: bool(self.items), timeout):
                raise queue.Empty
            item, n = self.items.popleft()
            self.pages -= n
            self.cond.notify_all()
            return item


_END = object()


class RasterFeed:
    """Iterates over what ``open_stream()`` yields, produced ahead in a thread (started now).
    ``close()`` stops the producer and the stream (its worker processes)."""

    def __init__(self, open_stream: Callable[[], Iterator[Outcome]], max_items: int, max_pages: int):
        self._queue = PageQueue(max(2, max_items), max(1, max_pages))
        self._stop = threading.Event()
        self._first = threading.Event()  # the producer has put its first item (or error, or end)
        self._thread = threading.Thread(target=self._produce, args=(open_stream,), name="docextract-rasterize",
                                        daemon=True)
        self._thread.start()

    def _produce(self, open_stream: Callable[[], Iterator[Outcome]]) -> None:
        try:
            stream = open_stream()
            for item in stream:
                while True:
                    if self._stop.is_set():
                        close = getattr(stream, "close", None)
                        if close is not None:
                            close()
                        return
                    try:
                        self._queue.put(item, timeout=0.2)
                        self._first.set()
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # surfaced in the consumer
            self._queue.put(e, force=True)
        finally:
            self._queue.put(_END, force=True)
            self._first.set()

    def wait_started(self) -> None:
        """Until the stream has produced something; raises what it raised first (a worker pool that
        could not start: ``CouldNotStart``), leaving it queued for the consumer too."""
        self._first.wait()
        with self._queue.cond:
            head = self._queue.items[0][0] if self._queue.items else None
        if isinstance(head, BaseException):
            raise head

    def __iter__(self) -> Iterator[Outcome]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()
