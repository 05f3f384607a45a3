"""Recognise a supported document format from a file's first bytes: signature *and* header structure.

A two-byte signature is not enough (a text file beginning ``BM`` is not a bitmap): each format's
fixed header fields are checked where the bytes are there.  A file too short to hold the whole
header but starting with a full signature is still taken for that format (a truncated file is
``corrupt`` at rasterize, which says more than ``unsupported_type``).

PDF: readers accept the header anywhere in the first 1024 bytes (scanners and print spoolers put
PJL commands, a byte-order mark or other junk first).  At offset 0 ``%PDF-1.N``/``%PDF-2.N`` is
enough; further in, an object header (``1 0 obj``) must follow it, so a text that merely
mentions ``%PDF-1.4`` is not taken for a PDF.
"""

from __future__ import annotations

import re
import struct

from pipeline.records import DocKind

HEAD_BYTES = 4096  # how much of a file ``sniff`` wants to see
PDF_HEADER_WINDOW = 1024

_PDF_HEADER = re.compile(rb"%PDF-[12]\.\d")
_PDF_OBJECT = re.compile(rb"\d{1,10}[\x00\t\n\f\r ]+\d{1,5}[\x00\t\n\f\r ]+obj\b")
_BMP_DIB_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}  # OS/2 1.x and 2.x, Windows 3.x, v2, v3, v4, v5
# JPEG: the marker after SOI is a table, a frame, a restart interval, an application segment or a
# comment (0xFF: fill bytes before the marker).
_JPEG_SECOND_MARKERS = {*range(0xC0, 0xD0), 0xDB, 0xDD, *range(0xE0, 0xF0), 0xFE, 0xFF}
_WEBP_CHUNKS = {b"VP8 ", b"VP8L", b"VP8X"}


def _pdf(head: bytes) -> bool:
    m = _PDF_HEADER.search(head, 0, PDF_HEADER_WINDOW + 8)
    if m is None or m.start() >= PDF_HEADER_WINDOW:
        return False
    return m.start() == 0 or _PDF_OBJECT.search(head, m.end()) is not None


def _png(head: bytes) -> bool:
    if not head.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    return len(head) < 16 or head[8:16] == b"\x00\x00\x00\x0dIHDR"  # the first chunk is a 13-byte IHDR


def _jpeg(head: bytes) -> bool:
    if not head.startswith(b"\xff\xd8\xff"):
        return False
    return len(head) < 4 or head[3] in _JPEG_SECOND_MARKERS


def _tiff(head: bytes, size: int | None) -> bool:
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or len(head) < 4:
        return False
    magic = struct.unpack(order + "H", head[2:4])[0]
    if magic == 42:  # classic TIFF: 4-byte offset of the first IFD, past the 8-byte header
        if len(head) < 8:
            return True
        ifd = struct.unpack(order + "I", head[4:8])[0]
        return ifd >= 8 and (size is None or ifd < size)
    if magic == 43:  # BigTIFF: offset size 8, a zero, then an 8-byte offset past the 16-byte header
        if len(head) < 16:
            return len(head) < 8 or struct.unpack(order + "HH", head[4:8]) == (8, 0)
        bytesize, zero, ifd = struct.unpack(order + "HHQ", head[4:16])
        return (bytesize, zero) == (8, 0) and ifd >= 16 and (size is None or ifd < size)
    return False


def _webp(head: bytes) -> bool:
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return False
    return len(head) < 16 or head[12:16] in _WEBP_CHUNKS


def _bmp(head: bytes, size: int | None) -> bool:
    """BITMAPFILEHEADER (14 bytes) then the DIB header, whose first field is its own size."""
    if head[:2] != b"BM" or len(head) < 18:
        return False
    file_size, reserved1, reserved2, pixels_at, dib_size = struct.unpack("<IHHII", head[2:18])
    if reserved1 or reserved2 or dib_size not in _BMP_DIB_SIZES:
        return False
    if pixels_at < 14 + dib_size or (size is not None and pixels_at > size):
        return False
    return file_size == 0 or file_size >= pixels_at  # 0: some writers leave it unset


def _gif(head: bytes) -> bool:
    """Header, logical screen descriptor, optional global colour table, then a block introducer."""
    if head[:6] not in (b"GIF87a", b"GIF89a"):
        return False
    if len(head) < 13:
        return True
    width, height, packed = struct.unpack("<HHB", head[6:11])
    if width == 0 or height == 0:
        return False
    at = 13 + (3 << ((packed & 0x07) + 1) if packed & 0x80 else 0)
    if len(head) <= at:
        return True
    block = head[at]
    if block == 0x21:  # extension: graphic control, comment, application or plain text
        return len(head) <= at + 1 or head[at + 1] in (0xF9, 0xFE, 0xFF, 0x01)
    return block in (0x2C, 0x3B)  # image descriptor, or the trailer of an empty GIF


def sniff(head: bytes, size: int | None = None) -> DocKind:
    """The supported format of a file whose first bytes are ``head`` (``HEAD_BYTES`` or all of a
    shorter file); ``size`` (the file's length, when known) lets offsets be checked against it."""
    if _pdf(head):
        return DocKind.PDF
    if _png(head):
        return DocKind.PNG
    if _jpeg(head):
        return DocKind.JPEG
    if _tiff(head, size):
        return DocKind.TIFF
    if _webp(head):
        return DocKind.WEBP
    if _bmp(head, size):
        return DocKind.BMP
    if _gif(head):
        return DocKind.GIF
    return DocKind.UNKNOWN
