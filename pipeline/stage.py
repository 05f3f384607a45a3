"""Stage directories: rasterize on cheap CPU nodes, extract on GPU nodes.

``docextract rasterize INPUT --out STAGE`` writes::

    STAGE/documents.parquet   one row per document: id, path, kind, size, pages, warnings, or its failure
    STAGE/pages/part-*.parquet   doc_id, page_index, width, height, source size, image (PNG bytes)

Pages are stored losslessly as raw RGB pixels compressed with zstd (level 1)
inside Parquet, so a stage is a handful of files that copy to object storage in
one go, not millions of small images.  Measured on the sample pages (840x1176):
raw+zstd-1 encodes 186 pages/s and decodes 360/s at 456 KiB/page; PNG (zlib
level 1) encodes 25/s and decodes 55/s at 391 KiB/page, which would make the
stage writer slower than rasterizing itself; JPEG q95 is lossy.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline import fs
from pipeline.discover import Discovered, discover
from pipeline.errors import RasterError, StageError
from pipeline.fs import write_bytes_atomic
from pipeline.rasterize import RasterSettings, image_tokens
from pipeline.records import DocKind, Document, ErrorType, Page, RasterizedDoc, Word, WordSource
from pipeline.store import parquet_bytes
from pipeline.workers import default_memory_limit, rasterize_stream

DOCS_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("path", pa.binary()),  # the OS path, byte-exact (non-UTF-8 names survive)
        pa.field("source_path", pa.string()),
        pa.field("doc_kind", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("page_count", pa.int32()),
        pa.field("pages_used", pa.int32()),
        pa.field("warnings", pa.list_(pa.string())),
        pa.field("stage", pa.string()),
        pa.field("error_type", pa.string()),
        pa.field("message", pa.string()),
        pa.field("image_tokens", pa.int64()),
    ]
)
WORDS_TYPE = pa.list_(
    pa.struct(
        [
            pa.field("text", pa.string()),
            pa.field("x0", pa.float64()),
            pa.field("y0", pa.float64()),
            pa.field("x1", pa.float64()),
            pa.field("y1", pa.float64()),
            pa.field("line", pa.int32()),
            pa.field("source", pa.string()),
            pa.field("conf", pa.float64()),
        ]
    )
)
PAGES_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("page_index", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("source_width", pa.int32()),
        pa.field("source_height", pa.int32()),
        pa.field("image", pa.binary()),  # zstd(raw RGB, row-major), see IMAGE_ENCODING
        pa.field("encoding", pa.string()),
        pa.field("words", WORDS_TYPE),  # null: words were not asked for; []: none found
    ]
)
IMAGE_ENCODING = "rgb24+zstd"
_CODEC = pa.Codec("zstd", compression_level=1)




SETTINGS_KEY = "docextract.rasterize"
PIXEL_SETTINGS = ("dpi", "min_pixels", "max_pixels", "max_pages", "direct_scans")  # what changes the pages
WORD_SETTINGS = ("words", "ocr", "ocr_engine")  # what changes the pages' words (checked when the stage kept them)


def pixel_settings(settings: RasterSettings) -> dict[str, Any]:
    return {k: getattr(settings, k) for k in PIXEL_SETTINGS + WORD_SETTINGS}


def _word_rows(words: list[Word] | None) -> list[dict[str, Any]] | None:
    if words is None:
        return None
    return [{"text": w.text, "x0": w.x0, "y0": w.y0, "x1": w.x1, "y1": w.y1, "line": w.line, "source": w.source.value,
             "conf": w.conf} for w in words]


def _words(rows: list[dict[str, Any]] | None) -> list[Word] | None:
    if rows is None:
        return None
    return [Word(r["text"], r["x0"], r["y0"], r["x1"], r["y1"], r["line"], WordSource(r["source"]), r["conf"]) for r in rows]


def stage_settings(stage_dir: Path) -> dict[str, Any] | None:
    """The rasterize settings a stage was made with (None for a stage written before they were kept)."""
    meta = pq.read_schema(Path(stage_dir) / "documents.parquet").metadata or {}
    raw = meta.get(SETTINGS_KEY.encode())
    return json.loads(raw) if raw else None


def check_settings(stage_dir: Path, settings: RasterSettings) -> None:
    """Raise ``StageError`` when the stage's pages were made with other pixel settings than ``settings``
    (results would carry a run key that does not describe their pixels)."""
    made = stage_settings(stage_dir)
    if made is None:
        return
    want = pixel_settings(settings)
    keys = PIXEL_SETTINGS + tuple(k for k in WORD_SETTINGS if k in made)  # a stage from before words: pixels only
    diff = [f"{k}: stage {made.get(k)!r}, config {want[k]!r}" for k in keys if made.get(k) != want[k]]
    if diff:
        raise StageError(
            f"{stage_dir} was rasterized with other settings ({'; '.join(diff)}): extract with the "
            "[rasterize] and [words] settings it was made with, or rasterize again"
        )


@dataclass
class PreflightReport:
    documents: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    pages: int = 0
    pages_dropped: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    image_tokens: int = 0
    seconds: float = 0.0

    def estimated_prompt_tokens(self, text_tokens_per_doc: int = 600) -> int:
        ok = self.documents - sum(self.failed.values())
        return self.image_tokens + text_tokens_per_doc * ok


def encode_image(img: Image.Image) -> bytes:
    return _CODEC.compress(img.tobytes(), asbytes=True)


def decode_image(data: bytes, width: int, height: int, encoding: str = IMAGE_ENCODING) -> Image.Image:
    if encoding != IMAGE_ENCODING:
        raise StageError(f"unknown page encoding {encoding!r}")
    raw = _CODEC.decompress(data, decompressed_size=width * height * 3, asbytes=True)
    return Image.frombytes("RGB", (width, height), raw)


def _doc_row(doc: Document, rdoc: RasterizedDoc | None, err: RasterError | None, stage: str | None) -> dict[str, Any]:
    import os

    return {
        "doc_id": doc.doc_id,
        "path": os.fsencode(doc.path),
        "source_path": doc.display_path,
        "doc_kind": doc.kind.value,
        "size": doc.size,
        "page_count": rdoc.total_pages if rdoc else None,
        "pages_used": len(rdoc.pages) if rdoc else None,
        "warnings": rdoc.warnings if rdoc else [],
        "stage": stage,
        "error_type": err.error_type.value if err else None,
        "message": err.message if err else None,
        "image_tokens": sum(image_tokens(p.width, p.height) for p in rdoc.pages) if rdoc else 0,
    }


def _prepare(stage_dir: Path | str) -> tuple[Path, Path]:
    """The stage folder, and a fresh folder inside it where the new pages are built (so a run killed while
    writing leaves the old stage whole).  Object storage is refused: a stage is a local folder."""
    if fs.is_uri(stage_dir):
        raise StageError(f"{stage_dir}: a stage directory is a local folder (copy it to object storage afterwards, "
                         "e.g. with `aws s3 sync`); `docextract run` and `extract --out` take object-store outputs")
    stage = Path(stage_dir)
    if stage.exists() and not stage.is_dir():
        raise StageError(f"{stage} exists and is not a directory")
    stage.mkdir(parents=True, exist_ok=True)
    for old in stage.glob(".building-*"):  # left by a rasterize that was killed
        shutil.rmtree(old, ignore_errors=True)
    building = stage / f".building-{os.getpid()}-{time.time_ns()}"
    building.mkdir()
    return stage, building


def _swap_in(stage: Path, building: Path) -> None:
    """Replace the stage's pages with the new ones.  ``documents.parquet`` goes first (the stage is then
    incomplete, and ``extract`` refuses it) and is written last, so no reader ever mixes two sets."""
    (stage / "documents.parquet").unlink(missing_ok=True)
    fs.fsync_dir(stage)
    shutil.rmtree(stage / "pages", ignore_errors=True)
    os.replace(building, stage / "pages")
    fs.fsync_dir(stage)


def write_stage(
    inputs: list[str], stage_dir: Path | str, settings: RasterSettings, workers: int, timeout_s: float,
    part_pages: int = 256,
) -> PreflightReport:
    """Rasterize ``inputs`` into ``stage_dir``, replacing what it held (one consistent set of documents)."""
    t0 = time.perf_counter()
    stage_dir, building = _prepare(stage_dir)
    found: Discovered = discover(inputs, exclude=[stage_dir])
    report = PreflightReport(documents=found.total)
    doc_rows: list[dict[str, Any]] = []
    for doc, f in found.failures:
        doc_rows.append(_doc_row(doc, None, RasterError(f.error_type, f.message), "discover"))
        report.by_kind[doc.kind.value] += 1
        report.failed[f.error_type.value] += 1
    page_rows: list[dict[str, Any]] = []
    seq = 0

    def flush() -> None:
        nonlocal seq, page_rows
        if not page_rows:
            return
        table = pa.Table.from_pylist(page_rows, schema=PAGES_SCHEMA)
        compression = {c: ("none" if c == "image" else "zstd") for c in table.column_names}
        write_bytes_atomic(building / f"part-{seq:05d}.parquet", parquet_bytes(table, compression))
        seq += 1
        page_rows = []

    stream = rasterize_stream(found.documents, settings, workers, timeout_s, default_memory_limit())
    for doc, out in stream:
        report.by_kind[doc.kind.value] += 1
        if isinstance(out, RasterError):
            doc_rows.append(_doc_row(doc, None, out, "rasterize"))
            report.failed[out.error_type.value] += 1
            continue
        doc_rows.append(_doc_row(doc, out, None, None))
        report.pages += len(out.pages)
        report.pages_dropped += out.total_pages - len(out.pages)
        for p in out.pages:
            report.image_tokens += image_tokens(p.width, p.height)
            page_rows.append(
                {
                    "doc_id": doc.doc_id,
                    "page_index": p.index,
                    "width": p.width,
                    "height": p.height,
                    "source_width": p.source_width,
                    "source_height": p.source_height,
                    "image": encode_image(p.image),
                    "encoding": IMAGE_ENCODING,
                    "words": _word_rows(p.words),
                }
            )
        if len(page_rows) >= part_pages:
            flush()
    flush()
    _swap_in(stage_dir, building)
    # documents.parquet last: its presence marks a complete stage.  It records the settings the
    # pages were made with: ``extract`` refuses a config whose pixels would differ (the run key says so).
    table = pa.Table.from_pylist(doc_rows, schema=DOCS_SCHEMA).replace_schema_metadata(
        {SETTINGS_KEY: json.dumps(pixel_settings(settings), sort_keys=True)}
    )
    write_bytes_atomic(stage_dir / "documents.parquet", parquet_bytes(table, "zstd"))
    report.seconds = time.perf_counter() - t0
    return report


def read_stage(stage_dir: Path) -> tuple[Discovered, dict[str, dict[str, Any]]]:
    """Documents (as ``Discovered``) and their rows from a stage directory."""
    import os

    from pipeline.records import Failure, Stage

    stage_dir = Path(stage_dir)
    docs_file = stage_dir / "documents.parquet"
    if not docs_file.exists():
        raise StageError(f"{stage_dir} is not a complete stage directory (no documents.parquet)")
    rows = pq.read_table(docs_file).to_pylist()
    found = Discovered()
    by_id = {}
    for r in rows:
        doc = Document(r["doc_id"], os.fsdecode(r["path"]), DocKind(r["doc_kind"]), r["size"])
        by_id[doc.doc_id] = r
        if r["stage"] == "discover":
            found.failures.append(
                (doc, Failure(doc.doc_id, Stage.DISCOVER, ErrorType(r["error_type"]), r["message"]))
            )
        else:
            found.documents.append(doc)
    return found, by_id


def stage_items(
    stage_dir: Path, docs: list[Document], rows: dict[str, dict[str, Any]]
) -> Iterator[tuple[Document, RasterizedDoc | RasterError]]:
    """Rasterized documents read back from a stage, in page-file order (memory: one part at a time)."""
    wanted = {d.doc_id: d for d in docs}
    for d in docs:
        r = rows[d.doc_id]
        if r["stage"] == "rasterize":
            yield d, RasterError(ErrorType(r["error_type"]), r["message"])
    pages: dict[str, dict[int, Page]] = {}
    emitted: set[str] = set()
    for part in sorted((Path(stage_dir) / "pages").glob("part-*.parquet")):
        for rec in pq.read_table(part).to_pylist():
            if rec["doc_id"] not in wanted or rec["doc_id"] in emitted:
                continue  # not asked for, or a copy of pages already given (each document once)
            img = decode_image(rec["image"], rec["width"], rec["height"], rec["encoding"])
            pages.setdefault(rec["doc_id"], {})[rec["page_index"]] = Page(
                rec["doc_id"], rec["page_index"], img, rec["source_width"], rec["source_height"], _words(rec.get("words"))
            )
        for doc_id in list(pages):
            r = rows[doc_id]
            if len(pages[doc_id]) == r["pages_used"]:
                ps = sorted(pages.pop(doc_id).values(), key=lambda p: p.index)
                emitted.add(doc_id)
                yield wanted[doc_id], RasterizedDoc(wanted[doc_id], ps, r["page_count"], list(r["warnings"] or []))
    for doc_id, d in wanted.items():
        if doc_id not in emitted and rows[doc_id]["stage"] is None:
            yield d, RasterError(ErrorType.CORRUPT, "stage directory is missing this document's pages")
