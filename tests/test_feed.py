"""pipeline/feed.py: the bounded queue between rasterizing and batching."""

import pytest


def test_page_queue_bounds_pages_and_documents_but_never_blocks_an_empty_queue():
    import queue as _q

    from pipeline.feed import PageQueue as _PageQueue
    from pipeline.records import RasterizedDoc

    def item(n):
        return ("doc", RasterizedDoc(document=None, pages=[None] * n, total_pages=n))  # type: ignore[arg-type]

    q = _PageQueue(max_items=3, max_pages=5)
    q.put(item(9), timeout=0)  # over the page limit, but the queue is empty: admitted
    with pytest.raises(_q.Full):
        q.put(item(1), timeout=0.05)
    assert len(q.get(timeout=0)[1].pages) == 9
    q.put(item(3), timeout=0)
    q.put(item(2), timeout=0)  # 5 pages: exactly the limit
    with pytest.raises(_q.Full):
        q.put(item(1), timeout=0.05)
    q.put("end", timeout=None, force=True)  # control items always get in
    assert [len(q.get(timeout=0)[1].pages) for _ in range(2)] == [3, 2]
    assert q.get(timeout=0) == "end"
    for _ in range(3):
        q.put(item(0), timeout=0)
    with pytest.raises(_q.Full):  # the document bound still holds for page-less items
        q.put(item(0), timeout=0.05)
    with pytest.raises(_q.Empty):
        _PageQueue(1, 1).get(timeout=0.01)
