"""Documents -> page images sized for Qwen2.5-VL's 28-pixel patch grid.

Knows pixels, not models.  PDFs are opened and checked with PyMuPDF (encryption,
damage, page count, page boxes, full-page JPEG scans) and their pages rendered with
PDFium (pypdfium2) straight to the target size (the scale is computed from the page
box, so no second resize is needed); PyMuPDF renders a page when PDFium cannot open
the file, counts its pages differently or fails on the page.  Why two libraries:
on real-world PDFs PDFium renders faster (bench/raster.py), PyMuPDF is the one that
reports repaired and truncated files.  Images are decoded with Pillow (JPEG decoded at
reduced scale with ``draft()`` when the target is much smaller), EXIF orientation
applied, converted to RGB.

PDFium is not thread-safe: one thread of a process rasterizes at a time (the worker
processes, or the runner's single producing thread).

Every problem becomes a ``RasterError`` carrying an ``ErrorType``; the caller
turns it into a failure row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, ImageSequence, UnidentifiedImageError

from pipeline import defaults as D
from pipeline.defaults import PATCH
from pipeline.errors import RasterError

if TYPE_CHECKING:
    from pipeline.config import RasterizeConfig, WordsConfig
from pipeline.records import DocKind, Document, ErrorType, Page, RasterizedDoc, Word

MAX_ASPECT = 200  # Qwen2.5-VL's processor rejects images with a larger aspect ratio

ImageFile.LOAD_TRUNCATED_IMAGES = False




@dataclass(frozen=True, slots=True)
class RasterSettings:
    """What the rasterizer needs of ``[rasterize]`` (picklable, hashable; no worker count or timeout)."""

    dpi: int = D.DPI
    min_pixels: int = D.MIN_PIXELS
    max_pixels: int = D.MAX_PIXELS
    max_pages: int = D.MAX_PAGES
    max_source_pixels: int = D.MAX_SOURCE_PIXELS
    direct_scans: bool = D.DIRECT_SCANS  # decode full-page JPEG scans directly instead of rendering them
    words: bool = False  # fill Page.words ([words] enabled; off unless asked: no text extraction, no OCR)
    ocr: str = D.OCR  # "auto" | "always" | "never"
    ocr_engine: str = D.OCR_ENGINE
    ocr_threads: int = D.OCR_THREADS

    @classmethod
    def from_config(cls, r: RasterizeConfig, w: WordsConfig | None = None) -> RasterSettings:
        pixels = cls(r.dpi, r.min_pixels, r.max_pixels, r.max_pages, r.max_source_pixels, r.direct_scans)
        if w is None:
            return pixels
        return dataclasses.replace(pixels, words=w.enabled, ocr=w.ocr, ocr_engine=w.ocr_engine, ocr_threads=w.ocr_threads)


def fit_to_grid(width: float, height: float, min_pixels: int, max_pixels: int, factor: int = PATCH) -> tuple[int, int]:
    """Target (width, height): multiples of ``factor``, pixel count within [min, max], aspect kept.

    Same rule as Qwen2.5-VL's ``smart_resize``, so the processor will not resize again.
    """
    if width <= 0 or height <= 0 or not math.isfinite(width) or not math.isfinite(height):
        raise RasterError(ErrorType.CORRUPT, f"invalid page size {width}x{height}")
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_ASPECT:
        raise RasterError(
            ErrorType.TOO_LARGE,
            f"page aspect ratio {aspect:.0f}:1 ({width:.0f}x{height:.0f}) exceeds the model's limit of {MAX_ASPECT}:1",
        )
    w, h = image_grid(max(width, factor), max(height, factor), min_pixels, max_pixels, factor)
    return int(w), int(h)


def image_grid(width: float, height: float, min_pixels: int, max_pixels: int, factor: int = PATCH) -> tuple[int, int]:
    """(width, height) the Qwen2-VL image processor resizes an image to (transformers' ``smart_resize``):
    multiples of ``factor``, pixel count within [min, max], aspect kept.  Raises ``ValueError`` for an
    aspect ratio over 200, as the processor does."""
    if min(width, height) <= 0 or max(width, height) / min(width, height) > 200:
        raise ValueError(f"image of {width}x{height} px: absolute aspect ratio must be smaller than 200")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return w, h


def image_tokens(width: int, height: int) -> int:
    """Vision tokens Qwen2.5-VL spends on an image of this (already fitted) size."""
    return (width // PATCH) * (height // PATCH)


# --------------------------------------------------------------------------- words


def _ocr_words(img: Image.Image, s: RasterSettings, what: str, warnings: list[str]) -> list[Word]:
    """OCR of one page image; a failure costs this page its words (and a warning), not the document."""
    from pipeline.errors import OcrError
    from pipeline.ocr import engine

    try:
        return engine(s.ocr_engine, s.ocr_threads).words(img)
    except OcrError as e:
        warnings.append(f"{what}: no words ({e})")
        return []


def _pdf_page_words(page: Any, img: Image.Image, s: RasterSettings, what: str, warnings: list[str]) -> list[Word]:
    """A PDF page's words: its text layer when that can serve (``ocr = "auto"``: a printed text layer,
    not an OCR layer over a scan), else OCR of its image."""
    from pipeline.words import text_layer

    if s.ocr == "always":
        return _ocr_words(img, s, what, warnings)
    try:
        layer = text_layer(page)
    except Exception as e:  # PyMuPDF's text extraction on a damaged page: read it as a scan
        warnings.append(f"{what}: text layer unreadable ({type(e).__name__}: {e})")
        return _ocr_words(img, s, what, warnings) if s.ocr == "auto" else []
    if layer.usable or s.ocr == "never":
        return layer.words  # under "never", an invisible OCR layer's words too (no other words to be had)
    return _ocr_words(img, s, what, warnings)


def _image_words(img: Image.Image, s: RasterSettings, what: str, warnings: list[str]) -> list[Word] | None:
    if not s.words:
        return None
    return [] if s.ocr == "never" else _ocr_words(img, s, what, warnings)


# --------------------------------------------------------------------------- PDF


def scan_image(pdf: Any, page: Any, tw: int, th: int) -> Image.Image | None:
    """A scanned page that is one upright, full-page JPEG, decoded directly instead of rendered.

    Only when the result is the same picture: exactly one image, covering the page (within 1%),
    not rotated or flipped, no soft mask, grey or RGB (CMYK JPEGs in PDFs carry Decode-array
    subtleties), no vector drawings, and no visible text (an invisible OCR layer is fine).
    JPEG decoding then scales by 1/2, 1/4 or 1/8 while decoding (``draft``), which is where the
    time goes for scans.
    """
    import pymupdf

    try:
        if page.rotation != 0:
            return None
        images = page.get_images(full=True)  # listing only, nothing decoded
        if len(images) != 1:
            return None
        xref, smask, _, _, bpc, _, _, _, filt, _ = images[0]
        if smask or bpc != 8 or filt != "DCTDecode":
            return None
        placements = page.get_image_info()  # no hashes: nothing decoded
        if len(placements) != 1:
            return None
        a, b, c, d, _, _ = placements[0]["transform"]
        if a <= 0 or d <= 0 or abs(b) > 1e-3 or abs(c) > 1e-3:
            return None  # rotated or flipped placement
        bbox = pymupdf.Rect(placements[0]["bbox"])
        r = page.rect
        tol_x, tol_y = r.width * 0.01, r.height * 0.01
        if (
            abs(bbox.x0 - r.x0) > tol_x
            or abs(bbox.y0 - r.y0) > tol_y
            or abs(bbox.x1 - r.x1) > tol_x
            or abs(bbox.y1 - r.y1) > tol_y
        ):
            return None
        if page.get_drawings():
            return None
        if any(span.get("type") != 3 for span in page.get_texttrace()):  # type 3 = invisible text
            return None
        raw = pdf.extract_image(xref)
        if not raw or raw.get("ext") not in ("jpeg", "jpg") or raw.get("colorspace") not in (1, 3):
            return None
        import io

        img: Image.Image = Image.open(io.BytesIO(raw["image"]))
        img.draft(img.mode, (tw, th))
        if img.size != (tw, th):
            img = img.resize((tw, th), Image.Resampling.BICUBIC)  # resize in the source mode (L is 3x cheaper)
        return img.convert("RGB") if img.mode != "RGB" else img
    except Exception:
        return None  # anything unexpected: fall back to rendering


class _Pdfium:
    """The document opened a second time, in PDFium, to render its pages (form fields included)."""

    def __init__(self, pdf: Any):
        self.pdf = pdf
        self.buffer: Any = None  # one pixel buffer for the document's pages, grown when a page needs more

    @staticmethod
    def open(data: bytes, pages: int) -> _Pdfium | None:
        """None when PDFium cannot open the file or counts another number of pages than PyMuPDF."""
        import pypdfium2 as pdfium

        try:
            pdf = pdfium.PdfDocument(data)
        except Exception:
            return None
        try:
            pdf.init_forms()  # before any page is loaded, or filled-in form fields are not drawn
            if len(pdf) == pages:
                return _Pdfium(pdf)
        except Exception:
            pass
        pdf.close()
        return None

    def render(self, index: int, tw: int, th: int) -> Image.Image:
        """Page ``index`` scaled to exactly ``tw`` x ``th`` (the page's own /Rotate applied), on white."""
        import ctypes

        import pypdfium2.raw as c

        stride = tw * 4  # RGBx: PDFium draws 32-bit pixels natively, and Pillow keeps RGB as 32-bit too
        if self.buffer is None or len(self.buffer) < stride * th:
            self.buffer = (ctypes.c_ubyte * (stride * th))()
        page = self.pdf[index]
        try:
            bitmap = c.FPDFBitmap_CreateEx(tw, th, c.FPDFBitmap_BGRx, self.buffer, stride)
            if not bitmap:
                raise MemoryError(f"PDFium could not make a {tw}x{th} bitmap")
            try:
                c.FPDFBitmap_FillRect(bitmap, 0, 0, tw, th, 0xFFFFFFFF)
                flags = c.FPDF_ANNOT | c.FPDF_REVERSE_BYTE_ORDER  # annotations drawn; RGB byte order
                c.FPDF_RenderPageBitmap(bitmap, page, 0, 0, tw, th, 0, flags)
                if self.pdf.formenv:
                    c.FPDF_FFLDraw(self.pdf.formenv, bitmap, page, 0, 0, tw, th, 0, flags)
            finally:
                c.FPDFBitmap_Destroy(bitmap)
        finally:
            page.close()
        return Image.frombytes("RGB", (tw, th), self.buffer, "raw", "RGBX", stride, 1)  # Pillow's own copy

    def close(self) -> None:
        self.pdf.close()


class _PageRenderer:
    """Renders one PDF's pages: with PDFium when it opens the file (first needed, so not for a document
    of direct scans) and counts the same pages as PyMuPDF, else with PyMuPDF; a page PDFium fails on
    goes to PyMuPDF."""

    def __init__(self, data: bytes, pages: int):
        self.data = data
        self.pages = pages
        self.pdfium: _Pdfium | None = None
        self.tried = False

    def render(self, page: Any, index: int, tw: int, th: int) -> Image.Image:
        if not self.tried:
            self.tried = True
            self.pdfium = _Pdfium.open(self.data, self.pages)
        if self.pdfium is not None:
            try:
                return self.pdfium.render(index, tw, th)
            except MemoryError:
                raise
            except Exception:
                pass
        return _render_mupdf(page, tw, th)

    def close(self) -> None:
        if self.pdfium is not None:
            self.pdfium.close()
            self.pdfium = None


def _render_mupdf(page: Any, tw: int, th: int) -> Image.Image:
    import pymupdf

    rect = page.rect
    matrix = pymupdf.Matrix(tw / rect.width, th / rect.height)
    pix = page.get_pixmap(matrix=matrix, alpha=False, colorspace=pymupdf.csRGB, annots=True)
    img = Image.frombytes("RGB", (pix.width, pix.height), pix.samples_mv, "raw", "RGB", pix.stride, 1)
    del pix
    return img if img.size == (tw, th) else img.resize((tw, th), Image.Resampling.BICUBIC)


def _open_pdf(data: bytes) -> tuple[Any, int, list[str]]:
    """PyMuPDF's document, its page count and warnings; ``RasterError`` for a file we must not render."""
    import pymupdf

    pymupdf.TOOLS.mupdf_display_errors(False)
    pymupdf.TOOLS.mupdf_display_warnings(False)
    try:
        pdf = pymupdf.open(stream=data, filetype="pdf")
    except Exception as e:  # pymupdf raises FileDataError, RuntimeError, ValueError
        raise RasterError(ErrorType.CORRUPT, f"PDF cannot be opened: {e}") from None
    try:
        if pdf.needs_pass:
            raise RasterError(ErrorType.ENCRYPTED, "PDF is encrypted and needs a password")
        try:
            total = pdf.page_count
        except Exception as e:
            raise RasterError(ErrorType.CORRUPT, f"PDF page tree is broken: {e}") from None
        if total == 0:
            raise RasterError(ErrorType.NO_PAGES, "PDF has no pages")
        warnings: list[str] = []
        if pdf.is_repaired:
            if b"%%EOF" not in data[-2048:]:
                raise RasterError(
                    ErrorType.CORRUPT,
                    f"PDF is truncated ({len(data):,} bytes, no %%EOF marker): pages or content may be missing",
                )
            warnings.append("PDF was damaged (e.g. broken xref) and repaired while opening")
    except BaseException:
        pdf.close()
        raise
    return pdf, total, warnings


def _rasterize_pdf(doc: Document, data: bytes, s: RasterSettings) -> RasterizedDoc:
    pdf, total, warnings = _open_pdf(data)
    renderer = _PageRenderer(data, total)
    with pdf:
        keep = min(total, s.max_pages)
        if keep < total:
            warnings.append(f"kept the first {keep} of {total} pages (max_pages={s.max_pages})")
        pages = []
        try:
            for i in range(keep):
                try:
                    page = pdf.load_page(i)
                    rect = page.rect
                    src_w, src_h = rect.width * s.dpi / 72.0, rect.height * s.dpi / 72.0
                    tw, th = fit_to_grid(src_w, src_h, s.min_pixels, s.max_pixels)
                    img = scan_image(pdf, page, tw, th) if s.direct_scans else None
                    if img is None:
                        img = renderer.render(page, i, tw, th)
                    words = _pdf_page_words(page, img, s, f"page {i + 1}", warnings) if s.words else None
                except RasterError as e:
                    raise RasterError(e.error_type, f"page {i + 1}: {e.message}") from None
                except MemoryError:
                    raise RasterError(ErrorType.TOO_LARGE, f"page {i + 1}: out of memory while rendering") from None
                except Exception as e:
                    raise RasterError(ErrorType.CORRUPT, f"page {i + 1} cannot be rendered: {e}") from None
                pages.append(Page(doc.doc_id, i, img, round(src_w), round(src_h), words))
        finally:
            renderer.close()
        return RasterizedDoc(doc, pages, total, warnings)


# --------------------------------------------------------------------------- images


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency composited on white; 16-bit scaled to 8-bit."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0
        scale = 255.0 / (65535.0 if hi > 255 else max(hi, 1.0)) if mode != "F" else 255.0 / max(hi, 1e-9)
        arr8 = np.clip(arr * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def _fit_image(img: Image.Image, s: RasterSettings) -> tuple[Image.Image, int, int]:
    src_w, src_h = img.size
    tw, th = fit_to_grid(src_w, src_h, s.min_pixels, s.max_pixels)
    rgb = _to_rgb(img)
    if rgb.size != (tw, th):
        rgb = rgb.resize((tw, th), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return rgb, src_w, src_h


def _rasterize_image(doc: Document, data: bytes, s: RasterSettings) -> RasterizedDoc:
    import io

    Image.MAX_IMAGE_PIXELS = None  # we check the declared size ourselves, before decoding
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise RasterError(ErrorType.CORRUPT, f"{doc.kind.value.upper()} data cannot be decoded") from None
    except Exception as e:
        raise RasterError(ErrorType.CORRUPT, f"image cannot be opened: {e}") from None
    w, h = img.size
    if w * h > s.max_source_pixels:
        raise RasterError(
            ErrorType.TOO_LARGE,
            f"image declares {w}x{h} = {w * h:,} pixels, over the limit of {s.max_source_pixels:,} "
            "(possible decompression bomb)",
        )
    warnings: list[str] = []
    try:
        if doc.kind is DocKind.TIFF:
            frames = getattr(img, "n_frames", 1)
        else:
            frames = 1  # GIF / WebP / APNG: first frame only
            if getattr(img, "n_frames", 1) > 1:
                warnings.append(f"animated image: used the first of {getattr(img, 'n_frames', 1)} frames")
        keep = min(frames, s.max_pages)
        if keep < frames:
            warnings.append(f"kept the first {keep} of {frames} frames (max_pages={s.max_pages})")
        pages = []
        for i, frame in enumerate(ImageSequence.Iterator(img)):
            if i >= keep:
                break
            fw, fh = frame.size
            if fw * fh > s.max_source_pixels:
                raise RasterError(ErrorType.TOO_LARGE, f"frame {i + 1} declares {fw}x{fh} pixels, over the limit")
            if frame.format == "JPEG" or doc.kind is DocKind.JPEG:
                tw, th = fit_to_grid(fw, fh, s.min_pixels, s.max_pixels)
                frame.draft("RGB", (tw, th))  # decode at 1/2, 1/4 or 1/8 scale when that is still large enough
            frame.load()
            oriented = frame
            if i == 0:
                orientation = frame.getexif().get(0x0112, 1)
                if orientation in (5, 6, 7, 8):
                    fw, fh = fh, fw
                oriented = ImageOps.exif_transpose(frame)
            out, _, _ = _fit_image(oriented, s)
            src_w, src_h = fw, fh
            pages.append(Page(doc.doc_id, i, out, src_w, src_h, _image_words(out, s, f"frame {i + 1}", warnings)))
    except RasterError:
        raise
    except MemoryError:
        raise RasterError(ErrorType.TOO_LARGE, "out of memory while decoding the image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise RasterError(ErrorType.CORRUPT, f"image data is damaged: {e}") from None
    return RasterizedDoc(doc, pages, frames, warnings)


def rasterize_bytes(doc: Document, data: bytes, s: RasterSettings) -> RasterizedDoc:
    t0 = time.perf_counter()
    if doc.kind is DocKind.PDF:
        out = _rasterize_pdf(doc, data, s)
    elif doc.kind in (DocKind.PNG, DocKind.JPEG, DocKind.TIFF, DocKind.WEBP, DocKind.BMP, DocKind.GIF):
        out = _rasterize_image(doc, data, s)
    else:
        raise RasterError(ErrorType.UNSUPPORTED_TYPE, f"unsupported document type {doc.kind.value}")
    out.seconds = time.perf_counter() - t0
    return out


def rasterize(doc: Document, s: RasterSettings) -> RasterizedDoc:
    """Read the file and rasterize it.  Raises ``RasterError``.

    The bytes rasterized are the bytes the document's id is the hash of: a file that changed since
    discovery (an upload still being written, a file truncated or replaced) fails as ``changed``
    (retryable; the next run hashes it again) instead of being recorded under another file's id."""
    from pipeline.fs import NotRegularFile, read_document

    try:
        data = read_document(doc.path)  # a local path or an object-store URI; never a FIFO or a device
    except NotRegularFile as e:
        raise RasterError(ErrorType.CHANGED, f"the file is now {e.what}, not the document discovered") from None
    except OSError as e:
        raise RasterError(ErrorType.UNREADABLE, f"cannot read file: {e.strerror or e}") from None
    if hashlib.sha256(data).hexdigest() != doc.doc_id:
        raise RasterError(
            ErrorType.CHANGED,
            f"the file changed after discovery ({doc.size:,} bytes then, {len(data):,} now): "
            "not rasterized; the next run reads it again",
        )
    return rasterize_bytes(doc, data, s)
