"""Rasterize functions that misbehave on purpose, run inside the worker processes.

Named by the file: ``hang*``, ``segv*`` and ``oom*`` break the worker; ``shrink*``, ``grow*`` and
``fifo*`` change the file between discovery and rasterizing, as the world does (a file truncated, an
upload that finishes while the run goes on, a file replaced by a named pipe), then rasterize it."""

import os
import signal
import time

from pipeline.workers import rasterize_one


def faulty(doc, settings):
    name = os.path.basename(doc.path)
    if name.startswith("hang"):
        time.sleep(3600)
    if name.startswith("segv"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if name.startswith("oom"):
        bytearray(64 << 30)  # over the worker's address-space limit: MemoryError
    if name.startswith("shrink"):
        os.truncate(doc.path, os.path.getsize(doc.path) // 2)
    if name.startswith("grow"):
        with open(doc.path, "ab") as f:
            f.write(b"\n% the rest of the upload\n")  # after %%EOF: the PDF still renders
    if name.startswith("fifo"):
        os.unlink(doc.path)
        os.mkfifo(doc.path)  # nobody will ever write to it
    return rasterize_one(doc, settings)
