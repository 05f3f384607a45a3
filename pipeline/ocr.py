"""OCR: the words printed on a page image, for pages whose text layer cannot serve (scans, photos).

One engine today, RapidOCR (package ``rapidocr`` on onnxruntime; its detection, direction and
recognition models, PP-OCRv6 small, ship inside the wheel: nothing is downloaded at run time).
Chosen over Tesseract on the real receipts of ``../shared/corpora/sroie-dev`` (bench/ocr.py,
bench/RESULTS.md): far better word and key-value recall at about twice the CPU time per page.

The engine is imported lazily and built once per process (``engine()``): a rasterizing worker pays
the import and model load (~0.3 s) on its first OCR page, never when no page needs OCR.  It runs
``threads`` onnxruntime threads (1 by default: the workers are the parallelism).

Words come back in reading order with the box as fractions of the image given (so of the upright
page), ``line`` grouping the detector's text boxes that sit on one printed line (a receipt's
"TOTAL" and its amount, far apart, are one line).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from PIL import Image

from pipeline.errors import OcrError
from pipeline.records import Word, WordSource

__all__ = ["ENGINES", "OcrEngine", "OcrError", "RapidOcr", "engine", "group_lines", "to_words"]

ENGINES = ("rapidocr",)


class OcrEngine(Protocol):
    name: str

    def words(self, image: Image.Image) -> list[Word]: ...


# A recognised piece of text: (text, score, (x0, y0, x1, y1) in pixels)
_Piece = tuple[str, float, tuple[float, float, float, float]]


def _rect(quad: Any) -> tuple[float, float, float, float]:
    xs = [float(p[0]) for p in quad]
    ys = [float(p[1]) for p in quad]
    return min(xs), min(ys), max(xs), max(ys)


def group_lines(boxes: Sequence[tuple[float, float, float, float]], overlap: float = 0.5) -> list[list[int]]:
    """Indices of ``boxes`` (x0, y0, x1, y1) grouped into printed lines, top to bottom, each left to right.

    A box joins a line when its vertical extent overlaps the line's by at least ``overlap`` of the
    smaller of the two heights (slightly tilted scans keep their lines; stacked lines do not merge)."""
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i][1] + boxes[i][3]) / 2)
    lines: list[tuple[float, float, list[int]]] = []  # (y0, y1, members)
    for i in order:
        x0, y0, x1, y1 = boxes[i]
        h = max(y1 - y0, 1e-6)
        for k in range(len(lines) - 1, max(-1, len(lines) - 4), -1):  # the last few lines are the only candidates
            ly0, ly1, members = lines[k]
            common = min(y1, ly1) - max(y0, ly0)
            if common >= overlap * min(h, max(ly1 - ly0, 1e-6)):
                members.append(i)
                lines[k] = (min(ly0, y0), max(ly1, y1), members)
                break
        else:
            lines.append((y0, y1, [i]))
    return [sorted(m, key=lambda i: boxes[i][0]) for _, _, m in lines]


def to_words(pieces: Sequence[Sequence[_Piece]], width: int, height: int) -> list[Word]:
    """Detector boxes (each a sequence of word pieces) -> Words: lines grouped, boxes as fractions."""
    boxes = []
    for seg in pieces:
        rects = [r for _, _, r in seg]
        boxes.append((min(r[0] for r in rects), min(r[1] for r in rects), max(r[2] for r in rects), max(r[3] for r in rects)))
    out: list[Word] = []
    for line_id, members in enumerate(group_lines(boxes)):
        for i in members:
            for text, score, (x0, y0, x1, y1) in sorted(pieces[i], key=lambda p: p[2][0]):
                text = text.strip()
                if not text:
                    continue
                out.append(
                    Word(
                        text,
                        min(max(x0 / width, 0.0), 1.0),
                        min(max(y0 / height, 0.0), 1.0),
                        min(max(x1 / width, 0.0), 1.0),
                        min(max(y1 / height, 0.0), 1.0),
                        line_id,
                        WordSource.OCR,
                        round(float(score), 4),
                    )
                )
    return out


MAX_ASPECT = 4.0


def _padded(img: Image.Image) -> Image.Image:
    """A long, thin page padded with white (right or bottom) to at most ``MAX_ASPECT``:1.

    RapidOCR scales the short side up to its detector's 736 px, so a 3x2000 px strip became a 736x490,000
    detector input (gigabytes: the process was killed).  Padding keeps the original pixels at their
    coordinates, so the boxes (divided by the original size) need no change."""
    w, h = img.size
    if max(w, h) <= MAX_ASPECT * min(w, h):
        return img
    out = Image.new("RGB", (max(w, round(h / MAX_ASPECT)), max(h, round(w / MAX_ASPECT))), "white")
    out.paste(img, (0, 0))
    return out


class RapidOcr:
    """RapidOCR on onnxruntime, CPU, ``threads`` intra-op threads."""

    name = "rapidocr"

    def __init__(self, threads: int = 1):
        try:
            from rapidocr import RapidOCR
        except ImportError as e:
            raise OcrError(f"OCR engine 'rapidocr' is not installed ({e}); pip install rapidocr onnxruntime") from None
        try:
            import cv2

            cv2.setNumThreads(threads)  # its resizes and contour work: the same budget as the model
        except ImportError:
            pass
        self.threads = threads
        try:
            self._ocr = RapidOCR(
                params={
                    "Global.log_level": "error",
                    "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                    "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                }
            )
        except Exception as e:  # a model file missing or unreadable, onnxruntime refusing it: no OCR here
            raise OcrError(f"OCR engine 'rapidocr' could not start: {type(e).__name__}: {e}") from None

    def words(self, image: Image.Image) -> list[Word]:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        try:
            res: Any = self._ocr(_padded(rgb), return_word_box=True)
        except Exception as e:  # the library raises its own errors, cv2.error, onnxruntime's: one page's problem
            raise OcrError(f"OCR failed: {type(e).__name__}: {e}") from None
        txts = getattr(res, "txts", None)
        if not txts:
            return []
        word_results = getattr(res, "word_results", None) or ()
        pieces: list[list[_Piece]] = []
        if len(word_results) == len(txts):
            for seg in word_results:
                pieces.append([(t, float(s), _rect(b)) for t, s, b in seg if b is not None])
        else:  # word boxes unavailable: one piece per detected box, split on spaces with the box shared
            for text, score, quad in zip(txts, res.scores, res.boxes, strict=True):
                pieces.append([(t, float(score), _rect(quad)) for t in str(text).split()])
        pieces = [p for p in pieces if p]
        return to_words(pieces, rgb.width, rgb.height)


_ENGINES: dict[tuple[str, int], OcrEngine] = {}  # one per process: a worker loads the models once


def engine(name: str = "rapidocr", threads: int = 1) -> OcrEngine:
    """This process's OCR engine ``name`` (built on first use)."""
    key = (name, threads)
    if key not in _ENGINES:
        if name != "rapidocr":
            raise OcrError(f"unknown OCR engine {name!r} (known: {', '.join(ENGINES)})")
        _ENGINES[key] = RapidOcr(threads)
    return _ENGINES[key]
