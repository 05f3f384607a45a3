"""The worker pool (pipeline/workers.py): pixels cross processes through a shared block, unchanged; a document
that hangs, crashes its worker or blows its memory costs only its own row."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from PIL import Image

from pipeline.discover import discover
from pipeline.rasterize import RasterError, RasterSettings, rasterize
from pipeline.records import ErrorType, RasterizedDoc
from pipeline.workers import PageBlock, RasterPool, rasterize_stream
from tests.helpers import write_pdf
from tests.raster_faults import faulty

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
needs_memfd = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd_create is Linux-only")


def _docs(tmp_path: Path):
    docs = [d for d in discover([str(SAMPLES / "invoices")]).documents if not Path(d.path).name.startswith("bad-")]
    docs += list(discover([str(SAMPLES / "receipts")]).documents)
    return docs


def _pixels(out: RasterizedDoc) -> list[tuple[tuple[int, int], str, bytes]]:
    return [(p.image.size, p.image.mode, p.image.tobytes()) for p in out.pages]


def _through_pool(docs, settings, n=2):
    with RasterPool(settings, n) as pool:
        return {doc.doc_id: out for doc, out in pool.imap(docs)}


@needs_memfd
def test_pool_pages_equal_in_process_pages(tmp_path):
    settings = RasterSettings(dpi=72, max_pixels=200_704)
    docs = _docs(tmp_path)
    assert len(docs) >= 10
    got = _through_pool(docs, settings)
    assert set(got) == {d.doc_id for d in docs}
    for doc in docs:
        out = got[doc.doc_id]
        assert isinstance(out, RasterizedDoc)
        assert all(isinstance(p.image, Image.Image) for p in out.pages)
        assert _pixels(out) == _pixels(rasterize(doc, settings))


@needs_memfd
def test_document_bigger_than_the_block_then_small_ones(tmp_path):
    # A resting block of 1 MiB: a 3-page document at ~1 MP/page (9 MB) makes the worker grow the
    # block, and the next documents make it shrink back; every page must still arrive intact.
    settings = RasterSettings(dpi=150, max_pixels=1_003_520)
    docs = _docs(tmp_path)
    multi = [d for d in docs if len(rasterize(d, settings).pages) > 1]
    assert multi, "the samples include a multi-page invoice"
    small = [d for d in docs if d not in multi]
    order = multi + small + multi + small
    sizes = []
    with RasterPool(settings, 1, block_bytes=1 << 20) as pool:  # one worker: every document reuses its blocks
        got = []
        for doc, out in pool.imap(order):
            got.append((doc, out))
            sizes.append(max(os.fstat(b.fd).st_size for b in pool.workers[0].blocks))
    assert [d.doc_id for d, _ in got] == [d.doc_id for d in order]
    for doc, out in got:
        assert _pixels(out) == _pixels(rasterize(doc, settings))
    assert max(sizes) > 8 << 20  # grown for a multi-page document (3 pages of ~3.5 MB)
    assert sizes[-1] <= 4 << 20 < max(sizes)  # and given back after one-page documents (~3 MB each)


def test_without_shared_memory_pages_are_pickled(tmp_path, monkeypatch):
    monkeypatch.setattr(PageBlock, "create", staticmethod(lambda resting=0: None))
    settings = RasterSettings(dpi=72, max_pixels=200_704)
    docs = _docs(tmp_path)[:4]
    got = _through_pool(docs, settings)
    for doc in docs:
        assert _pixels(got[doc.doc_id]) == _pixels(rasterize(doc, settings))


@needs_memfd
def test_block_round_trip_keeps_other_modes_and_sizes():
    from pipeline.records import Page

    block = PageBlock.create()
    assert block is not None
    try:
        rgb = Image.new("RGB", (57, 31), (1, 2, 3))
        rgb.putpixel((56, 30), (250, 251, 252))
        gray = Image.new("L", (10, 10), 7)  # not RGB: stays in the pickled record
        out = RasterizedDoc(document=None, pages=[Page("d", 0, rgb, 57, 31), Page("d", 1, gray, 10, 10)], total_pages=2)  # type: ignore[arg-type]
        block.put(out)
        assert not isinstance(out.pages[0].image, Image.Image)
        assert out.pages[1].image is gray
        block.take(out)
        assert out.pages[0].image.tobytes() == rgb.tobytes()
        assert out.pages[0].image.getpixel((56, 30)) == (250, 251, 252)
    finally:
        block.close()


def _named_pdfs(tmp_path, names):
    """One-page PDFs named as given (``tests.raster_faults.faulty`` acts on the name), in that order."""
    d = tmp_path / "in"
    d.mkdir()
    for name in names:
        write_pdf(d / name, text=name)
    return sorted(discover([str(d)]).documents, key=lambda doc: names.index(Path(doc.path).name))


def test_documents_queued_behind_a_crash_or_hang_are_not_blamed(tmp_path):
    # One worker, so every document waits in the queue behind the one before it: the good files
    # queued behind the segfault and the hang must come back rendered, not as that file's failure.
    names = ["ok1.pdf", "segv.pdf", "ok2.pdf", "ok3.pdf", "hang.pdf", "ok4.pdf", "segv2.pdf", "ok5.pdf"]
    docs = _named_pdfs(tmp_path, names)
    with RasterPool(RasterSettings(dpi=72, max_pixels=50_176), 1, timeout_s=3, func=faulty) as pool:
        got = [(Path(doc.path).name, out) for doc, out in pool.imap(docs)]
        restarts = pool.restarts
    assert sorted(n for n, _ in got) == sorted(names)  # each exactly once
    out = dict(got)
    assert out["segv.pdf"].error_type is ErrorType.WORKER_CRASHED
    assert out["segv2.pdf"].error_type is ErrorType.WORKER_CRASHED
    assert out["hang.pdf"].error_type is ErrorType.TIMEOUT
    for i in range(1, 6):
        assert not isinstance(out[f"ok{i}.pdf"], RasterError), out[f"ok{i}.pdf"]
        assert len(out[f"ok{i}.pdf"].pages) == 1
    assert restarts == 3


def test_consumer_that_holds_the_stream_does_not_turn_answers_into_timeouts_or_crashes(tmp_path):
    # The runner's producer thread can sit at a yield for a whole engine batch (its queue is full).
    # Meanwhile workers answer, and one dies on the document queued behind its answer.  On resume,
    # every answer must count: nothing finished is reported as a timeout or as the next one's crash.
    import time as _time

    names = ["ok0.pdf", "ok1.pdf", "ok2.pdf", "segv.pdf", "ok3.pdf", "ok4.pdf", "ok5.pdf", "ok6.pdf"]
    docs = _named_pdfs(tmp_path, names)
    got = {}
    with RasterPool(RasterSettings(dpi=72, max_pixels=50_176), 2, timeout_s=4, func=faulty) as pool:
        for doc, out in pool.imap(docs):
            got[Path(doc.path).name] = out
            if len(got) <= 2:
                _time.sleep(4.5)  # longer than the time limit: the workers finish (and crash) meanwhile
    assert sorted(got) == sorted(names)
    assert got["segv.pdf"].error_type is ErrorType.WORKER_CRASHED
    bad = {n: o.error_type for n, o in got.items() if isinstance(o, RasterError) and n != "segv.pdf"}
    assert bad == {}


def test_pool_recovers_from_hang_crash_and_memory_blowup(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for name in ("ok1.pdf", "hang.pdf", "ok2.pdf", "segv.pdf", "oom.pdf", "ok3.pdf"):
        write_pdf(d / name, text=name)
    docs = discover([str(d)]).documents
    from tests.raster_faults import faulty

    t0 = time.monotonic()
    out = dict(
        (os.path.basename(doc.path), res)
        for doc, res in rasterize_stream(docs, RasterSettings(dpi=72, max_pixels=50176), 2, timeout_s=3, memory_limit_bytes=4 << 30, func=faulty)
    )
    assert time.monotonic() - t0 < 30
    assert out["hang.pdf"].error_type is ErrorType.TIMEOUT
    assert out["segv.pdf"].error_type is ErrorType.WORKER_CRASHED and "-11" in out["segv.pdf"].message
    assert out["oom.pdf"].error_type is ErrorType.TOO_LARGE
    assert all(not isinstance(out[f"ok{i}.pdf"], RasterError) for i in (1, 2, 3))
