"""Page images for the review page, rendered again from the source file with the project's own
rasterizer and embedded as ``data:`` URIs (JPEG), so a page opens from disk with no network.

Evidence boxes are fractions of the upright page, so the images may be any size: they are rendered
at the model's default pixel budget (about 1 Mpx, readable for a full A4 page) and compressed at a
modest JPEG quality (typically 100-250 KB a page).  The bytes read must still be the document's:
a source that changed since the run would show boxes over the wrong page, so it is not shown.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from dataclasses import dataclass, field

from pipeline import defaults as D
from pipeline import fs
from pipeline.errors import RasterError
from pipeline.rasterize import RasterSettings, rasterize_bytes
from pipeline.records import Document
from pipeline.sniff import HEAD_BYTES, sniff

JPEG_QUALITY = 72
REVIEW_PIXELS = D.MAX_PIXELS  # the model's default page budget


@dataclass
class PageImages:
    """The pages of one document as data URIs (with their pixel sizes), or why there are none."""

    uris: list[str] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    note: str | None = None  # shown instead of (or after) the images: source not found, changed, unreadable


def _jpeg_uri(img: object) -> str:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)  # type: ignore[attr-defined]
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def resolve_source(source_path: str, root: str | None) -> str:
    """Where to read a source from: URIs and absolute paths as recorded, relative ones under ``root``."""
    if not source_path or fs.is_uri(source_path) or os.path.isabs(source_path) or root is None:
        return source_path
    return os.path.join(root, source_path)


def page_images(doc_id: str, location: str, pages: int, pixels: int = REVIEW_PIXELS) -> PageImages:
    """The first ``pages`` pages of the document at ``location`` (whose id must be ``doc_id``)."""
    if not location:
        return PageImages(note="source not found: the row records no source path")
    try:
        data = fs.read_document(location)
    except FileNotFoundError:
        return PageImages(note=f"source not found: {location} (moved or deleted since the run?)")
    except OSError as e:
        return PageImages(note=f"source cannot be read: {location}: {e.strerror or e}")
    if hashlib.sha256(data).hexdigest() != doc_id:
        return PageImages(note=f"source changed since the run: {location} no longer holds the document extracted "
                               "(its bytes do not match the document id), so its pages are not shown")
    settings = RasterSettings(max_pixels=pixels, max_pages=max(pages, 1))
    try:
        raster = rasterize_bytes(Document(doc_id, location, sniff(data[:HEAD_BYTES], len(data)), len(data)), data, settings)
    except RasterError as e:
        return PageImages(note=f"pages cannot be rendered: {e.message}")
    out = PageImages()
    for page in raster.pages:
        out.uris.append(_jpeg_uri(page.image))
        out.sizes.append((page.width, page.height))
    return out
