"""Rasterize functions that misbehave on purpose, run inside the worker processes."""

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
    return rasterize_one(doc, settings)
