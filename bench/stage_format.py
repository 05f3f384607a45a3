"""Stage page encodings: encode/decode pages/s and size, on the sample pages (baseline: PNG, zlib level 1).

    .venv/bin/python bench/stage_format.py
"""

import io
import time

from PIL import Image

from pipeline.discover import discover
from pipeline.rasterize import RasterSettings, rasterize


def main() -> None:
    docs = discover(["data/samples/invoices", "data/samples/receipts"]).documents
    pages = []
    for d in docs:
        try:
            pages += [p.image for p in rasterize(d, RasterSettings()).pages]
        except Exception:
            pass
    print(len(pages), "pages", pages[0].size, flush=True)
    def enc(fmt, **kw):
        def f(im):
            b = io.BytesIO(); im.save(b, fmt, **kw); return b.getvalue()
        return f
    cands = {"raw": lambda im: im.tobytes(), "png-1": enc("PNG", compress_level=1), "png-6": enc("PNG", compress_level=6),
             "jpeg-95": enc("JPEG", quality=95), "webp-lossless": enc("WEBP", lossless=True, method=0)}
    for name, f in cands.items():
        t = time.perf_counter(); blobs = [f(im) for im in pages]; te = time.perf_counter() - t
        t = time.perf_counter()
        for b, im in zip(blobs, pages):
            if name == "raw": Image.frombytes("RGB", im.size, b)
            else: Image.open(io.BytesIO(b)).convert("RGB")
        td = time.perf_counter() - t
        print(f"{name:14s} encode {len(pages)/te:7.1f} pages/s  decode {len(pages)/td:7.1f} pages/s  {sum(map(len, blobs))/len(pages)/1024:8.1f} KiB/page", flush=True)
    import pyarrow as pa
    for lvl in (1, 3):
        codec = pa.Codec("zstd", compression_level=lvl)
        t = time.perf_counter(); blobs = [codec.compress(im.tobytes(), asbytes=True) for im in pages]; te = time.perf_counter() - t
        t = time.perf_counter()
        for b, im in zip(blobs, pages):
            Image.frombytes("RGB", im.size, codec.decompress(b, decompressed_size=im.width*im.height*3, asbytes=True))
        td = time.perf_counter() - t
        print(f"raw+zstd-{lvl}     encode {len(pages)/te:7.1f} pages/s  decode {len(pages)/td:7.1f} pages/s  {sum(map(len, blobs))/len(pages)/1024:8.1f} KiB/page", flush=True)


if __name__ == "__main__":
    main()
