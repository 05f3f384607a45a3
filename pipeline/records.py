"""The records that flow between stages.

document -> pages -> request -> generation -> extraction | failure

Every failure is a record (data to query), never only a log line.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from pipeline import defaults as D

if TYPE_CHECKING:
    from pipeline.config import SamplingConfig


class Stage(str, enum.Enum):
    DISCOVER = "discover"
    RASTERIZE = "rasterize"
    INFER = "infer"
    VALIDATE = "validate"


class ErrorType(str, enum.Enum):
    """Failure categories.  ``retryable`` ones may succeed on a later run unchanged."""

    # discover / rasterize
    UNREADABLE = "unreadable"  # I/O error, permission denied, vanished file
    EMPTY_FILE = "empty_file"  # zero bytes
    UNSUPPORTED_TYPE = "unsupported_type"  # bytes are not a supported format
    CORRUPT = "corrupt"  # format recognised but the file is broken/truncated
    ENCRYPTED = "encrypted"  # password-protected PDF
    NO_PAGES = "no_pages"  # a PDF with zero pages
    TOO_LARGE = "too_large"  # decompression bomb, absurd page size
    TIMEOUT = "timeout"  # rasterization exceeded its time limit
    WORKER_CRASHED = "worker_crashed"  # the rasterizing process died
    REQUEST_INVALID = "request_invalid"  # the engine rejected this request (bad image, too long)
    REFUSED_SYMLINK = "refused_symlink"  # a symlink discover.follow_symlinks does not follow: not read
    CHANGED = "changed"  # the bytes changed between discovery and rasterizing (e.g. an upload in progress)
    # infer
    ENGINE_ERROR = "engine_error"
    TRUNCATED = "truncated"  # stopped on the token limit
    # validate
    INVALID_JSON = "invalid_json"
    SCHEMA_MISMATCH = "schema_mismatch"
    RULE_VIOLATION = "rule_violation"

    @property
    def retryable(self) -> bool:
        return self in RETRYABLE

    @property
    def input_reject(self) -> bool:
        """The input itself is bad (not a document we can read): counted apart from processing failures."""
        return self in INPUT_REJECTS


RETRYABLE = frozenset(
    {
        ErrorType.UNREADABLE,
        ErrorType.TIMEOUT,
        ErrorType.WORKER_CRASHED,
        ErrorType.ENGINE_ERROR,
        ErrorType.TRUNCATED,
        ErrorType.INVALID_JSON,
        ErrorType.SCHEMA_MISMATCH,
        ErrorType.RULE_VIOLATION,
        ErrorType.CHANGED,
    }
)


INPUT_REJECTS = frozenset(
    {
        ErrorType.EMPTY_FILE,
        ErrorType.UNSUPPORTED_TYPE,
        ErrorType.ENCRYPTED,
        ErrorType.CORRUPT,
        ErrorType.NO_PAGES,
        ErrorType.TOO_LARGE,
    }
)


class DocKind(str, enum.Enum):
    PDF = "pdf"
    PNG = "png"
    JPEG = "jpeg"
    TIFF = "tiff"
    WEBP = "webp"
    BMP = "bmp"
    GIF = "gif"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Document:
    doc_id: str  # sha256 of the bytes; for unreadable files, sha256 of the path (prefixed "path:")
    path: str  # as the OS gave it (may hold surrogate escapes for non-UTF-8 names)
    kind: DocKind
    size: int

    @property
    def display_path(self) -> str:
        """UTF-8-safe form for output tables and messages (undecodable bytes become U+FFFD)."""
        import os

        return os.fsencode(self.path).decode("utf-8", "replace")


class WordSource(str, enum.Enum):
    TEXT_LAYER = "text_layer"  # a digital PDF page's own text
    OCR = "ocr"  # recognised on the page image


@dataclass(frozen=True, slots=True)
class Word:
    """A word printed on a page, with its box in fractions (0-1) of the upright page's width and height."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    line: int  # words with the same ``line`` on a page were read as one printed line, in reading order
    source: WordSource
    conf: float | None = None  # the OCR engine's own score; None for the text layer


@dataclass(slots=True)
class Page:
    doc_id: str
    index: int  # 0-based page/frame number in the source document
    image: Image.Image  # RGB, sized for the model's patch grid
    source_width: int  # before resizing (pixels at the render DPI, or the image's own size)
    source_height: int
    words: list[Word] | None = None  # None: words were not asked for; [] : asked for, none found

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


@dataclass(slots=True)
class RasterizedDoc:
    """Output of the rasterize stage for one document."""

    document: Document
    pages: list[Page]
    total_pages: int  # pages in the source, before ``max_pages``
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(slots=True)
class Sampling:
    """Per-request sampling (defaults: ``[sampling]``'s)."""

    temperature: float = D.TEMPERATURE
    top_p: float = D.TOP_P
    max_tokens: int = D.MAX_TOKENS
    seed: int | None = D.SEED

    @classmethod
    def from_config(cls, s: SamplingConfig, temperature_step: float = 0.0, attempt: int = 1) -> Sampling:
        """The sampling of ``attempt`` (1-based): a re-ask adds ``temperature_step`` per attempt."""
        return cls(s.temperature + temperature_step * (attempt - 1), s.top_p, s.max_tokens, s.seed)


@dataclass(slots=True)
class Request:
    """One chat request per document, engine-neutral.

    ``messages`` use OpenAI-style content parts; images are ``{"type": "image", "image": PIL.Image}``.
    """

    doc_id: str
    messages: list[dict[str, Any]]
    json_schema: dict[str, Any]
    sampling: Sampling
    attempt: int = 1
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)  # this request (a re-ask is another), across processes

    @property
    def images(self) -> list[Image.Image]:
        out: list[Image.Image] = []
        for m in self.messages:
            content = m.get("content")
            if isinstance(content, list):
                out.extend(p["image"] for p in content if p.get("type") == "image")
        return out


@dataclass(slots=True)
class Generation:
    doc_id: str
    text: str
    finish_reason: str  # "stop" | "length" | "error" | engine-specific
    prompt_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0  # wall time of the engine call this generation was part of
    error: str | None = None  # set when the engine could not produce an answer for this request
    error_type: ErrorType | None = None
    warnings: list[str] = field(default_factory=list)  # what the engine changed to make the request fit
    pages_used: int | None = None  # pages the engine sent (trailing pages dropped to fit); None = all
    # The sampled tokens' log-probabilities (``engine.logprobs``) and where each token starts in ``text``
    # (a token runs to the next one's start; one that adds no text, e.g. the end token, has zero width).
    # Both None when the engine was not asked for them; ``pipeline.confidence`` turns them into field scores.
    token_offsets: list[int] | None = None
    token_logprobs: list[float] | None = None


@dataclass(slots=True)
class Extraction:
    doc_id: str
    value: Any  # the validated pydantic model instance
    raw_text: str
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Failure:
    doc_id: str
    stage: Stage
    error_type: ErrorType
    message: str
    raw_output: str | None = None
    errors: list[str] = field(default_factory=list)  # every error message across attempts

    def __post_init__(self) -> None:
        if not self.errors:
            self.errors = [self.message]
