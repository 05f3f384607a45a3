"""A worker's shared pixel block: how rasterized pages cross from a worker process to the parent.

The worker copies each RGB page into a Linux ``memfd`` (one copy, ~0.8 ms for a 1.2 MP page) and sends a
placeholder in its place; the parent copies the pixels out into its own image (~0.6 ms) before it sends
the worker its next document, so one block per worker is reused.  Pickling the same page cost 13-16 ms
across both processes (bench/raster.py).  Where ``memfd_create`` is missing (macOS) ``PageBlock.create``
returns None and the pages are pickled.  The block is anonymous: nothing is left behind when a worker is
killed.  Used by ``pipeline/workers.py``.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

from PIL import Image

from pipeline.records import RasterizedDoc

BLOCK_BYTES = 32 << 20  # a page block's resting size (sparse until written); grown for big documents
_ALIGN = 64


@dataclass(frozen=True, slots=True)
class _InBlock:
    """Stands in for a page image while the page travels: its pixels are in the worker's block."""

    offset: int
    size: tuple[int, int]


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


class PageBlock:
    """One worker's shared pixel block (``memfd``): the worker writes a document's RGB pages in,
    the parent copies them out before it sends the next document."""

    def __init__(self, fd: int, resting: int = BLOCK_BYTES):
        self.fd = fd
        self.resting = resting
        self.mm: mmap.mmap | None = None

    @staticmethod
    def create(resting: int = BLOCK_BYTES) -> PageBlock | None:
        if not hasattr(os, "memfd_create"):
            return None
        fd = -1
        try:
            fd = os.memfd_create("docextract-pages", os.MFD_CLOEXEC)
            os.ftruncate(fd, resting)
        except OSError:
            if fd >= 0:
                os.close(fd)
            return None
        return PageBlock(fd, resting)

    def _map(self, need: int) -> mmap.mmap:
        if self.mm is None or len(self.mm) < need:
            if self.mm is not None:
                self.mm.close()
            self.mm = mmap.mmap(self.fd, os.fstat(self.fd).st_size)
        return self.mm

    def put(self, out: RasterizedDoc) -> None:
        """Worker side: move the RGB pages' pixels into the block (pages it cannot take stay pickled)."""
        import numpy as np

        pages = [p for p in out.pages if isinstance(p.image, Image.Image) and p.image.mode == "RGB"]
        need = sum(_aligned(p.image.width * p.image.height * 3) for p in pages)
        if not pages:
            return
        have = os.fstat(self.fd).st_size
        want = max(self.resting, need)
        if have < need or have > want:  # grow for a big document; give the memory back after one
            if self.mm is not None:
                self.mm.close()
                self.mm = None
            os.ftruncate(self.fd, want)
        mm = self._map(need)
        offset = 0
        for p in pages:
            w, h = p.image.size
            dst = np.frombuffer(mm, dtype=np.uint8, count=w * h * 3, offset=offset).reshape(h, w, 3)
            dst[...] = np.asarray(p.image)
            del dst
            p.image = _InBlock(offset, (w, h))  # type: ignore[assignment]
            offset += _aligned(w * h * 3)

    def take(self, out: RasterizedDoc) -> None:
        """Parent side: replace the placeholders with images of their own (copied out of the block)."""
        refs = [p for p in out.pages if isinstance(p.image, _InBlock)]
        if not refs:
            return
        end = max(r.image.offset + r.image.size[0] * r.image.size[1] * 3 for r in refs)  # type: ignore[union-attr,attr-defined]
        view = memoryview(self._map(end))
        try:
            for p in refs:
                ref: _InBlock = p.image  # type: ignore[assignment]
                n = ref.size[0] * ref.size[1] * 3
                p.image = Image.frombytes("RGB", ref.size, view[ref.offset : ref.offset + n])
        finally:
            view.release()

    def close(self) -> None:
        if self.mm is not None:
            self.mm.close()
            self.mm = None
        os.close(self.fd)
