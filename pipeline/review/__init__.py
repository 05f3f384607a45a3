"""``docextract review OUT --html DIR``: a static HTML report for people checking the extraction.

``DIR/index.html`` lists the documents with counts (documents, flagged, failed), failures and
flagged results first; ``DIR/docs/<doc id>.html`` shows one document: its page images with a box
around each value's evidence, the values with confidence, grounding and page, flagged fields
highlighted with their reasons, and for a failure its stage, type, message and raw output.

One file per document, not one page for the whole output: every page carries its images inline
(``data:`` URIs, ~100-250 KB a page), so a single file for a 500-document output would be hundreds
of megabytes that a browser must parse before it shows anything; a page per document opens at once,
and the index, without images, stays small.  Every file is complete in itself (styles, script and
images inline; the CSP forbids any request) and the links between them are relative, so ``DIR``
can be copied, zipped or opened from disk anywhere.

Python API: :func:`write_review`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline import defaults as D
from pipeline import fs
from pipeline.errors import CouldNotStart
from pipeline.records import Stage
from pipeline.review.data import DocView, Review, load_review
from pipeline.review.images import PageImages, page_images, resolve_source
from pipeline.review.render import GENERATOR, IndexInfo, Neighbours, doc_file, doc_html, index_html

log = logging.getLogger(__name__)

__all__ = ["ReviewWritten", "load_review", "write_review"]

# failures after rasterizing (the model's answer was refused): their pages are shown; earlier ones could not be read
RENDERED_STAGES = {Stage.INFER.value, Stage.VALIDATE.value}


@dataclass
class ReviewWritten:
    index: Path
    documents: int  # in the output
    shown: int  # pages written (all, or flagged + failed with only_flagged)
    flagged: int
    failed: int
    images: int  # page images embedded
    without_images: int  # documents whose pages could not be shown (source not found, changed, unreadable)
    bytes: int  # written, all files
    seconds: float


def _prepare(html_dir: Path) -> None:
    """Make ``html_dir`` ready: new or empty, or a previous review (its document pages are removed).
    Anything else is refused rather than written into."""
    if html_dir.exists() and not html_dir.is_dir():
        raise CouldNotStart(f"--html {html_dir} is a file, not a directory")
    if html_dir.is_dir() and any(html_dir.iterdir()):
        index = html_dir / "index.html"
        ours = index.is_file() and f'content="{GENERATOR}"' in index.read_text(errors="replace")[:4096]
        if not ours:
            raise CouldNotStart(f"--html {html_dir} is not empty and holds no earlier review: choose a new or empty directory")
        for old in (html_dir / "docs").glob("*.html"):
            old.unlink()
    (html_dir / "docs").mkdir(parents=True, exist_ok=True)


def _images(doc: DocView, source_root: str | None) -> PageImages:
    if doc.failure is not None and doc.failure.stage not in RENDERED_STAGES:
        return PageImages()  # never rasterized (unreadable, corrupt, encrypted...): the message says why
    pages = doc.pages_used or min(doc.page_count or 1, D.MAX_PAGES)  # a failure's: as many as a run would send
    return page_images(doc.doc_id, resolve_source(doc.source_path, source_root), pages)


def write_review(
    out_dir: Path | str, html_dir: Path | str, only_flagged: bool = False, source_root: str | None = None
) -> ReviewWritten:
    """Write the review of output ``out_dir`` into ``html_dir``.  Relative source paths are read under
    ``source_root`` (default: the current directory, as the run read them).  ``CouldNotStart`` when
    ``out_dir`` is not an output or ``html_dir`` holds something else."""
    t0 = time.perf_counter()
    review: Review = load_review(out_dir, only_flagged)
    html_dir = Path(html_dir)
    _prepare(html_dir)
    written = images = blind = 0
    for i, doc in enumerate(review.docs):
        pics = _images(doc, source_root)
        images += len(pics.uris)
        blind += 1 if pics.note else 0
        nav = Neighbours(review.docs[i - 1] if i else None, review.docs[i + 1] if i + 1 < len(review.docs) else None)
        data = doc_html(doc, pics, nav).encode()
        fs.write_bytes_atomic(html_dir / "docs" / doc_file(doc.doc_id), data)
        written += len(data)
        if (i + 1) % 25 == 0:
            log.info("review: %d/%d documents written", i + 1, len(review.docs))
    info = IndexInfo(str(out_dir), dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), only_flagged)
    index = index_html(review, info).encode()
    fs.write_bytes_atomic(html_dir / "index.html", index)
    return ReviewWritten(html_dir / "index.html", review.total, len(review.docs), review.flagged, review.failed,
                         images, blind, written + len(index), time.perf_counter() - t0)
