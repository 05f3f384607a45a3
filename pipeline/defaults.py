"""Default values shared by the config models (``pipeline.config``) and the light records the worker
processes use (``RasterSettings``, ``Sampling``): one place, and no pydantic import in the workers."""

from typing import Final, Literal

PATCH = 28  # Qwen2.5-VL: 14 px patches merged 2x2

DPI = 150
MIN_PIXELS = 56 * 56
MAX_PIXELS = 1280 * PATCH * PATCH
MAX_PAGES = 8
MAX_SOURCE_PIXELS = 178_956_970
DIRECT_SCANS = True

WORDS = True
OCR: Final[Literal["auto", "always", "never"]] = "auto"
OCR_ENGINE: Final[Literal["rapidocr"]] = "rapidocr"
OCR_THREADS = 1

TEMPERATURE = 0.0
TOP_P = 1.0
MAX_TOKENS = 2048
SEED = 0
