"""Fixtures: documents made here (PyMuPDF, Pillow), never committed binaries; a tiny model for vLLM; a local Ray."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import JobConfig

# The builders live in tests/helpers.py; importing them from here (as older and concurrent test files do) still works.
from tests.helpers import (  # noqa: F401
    REPO,
    invoice_truth,
    small_config,
    write_encrypted_pdf,
    write_image,
    write_pdf,
    write_tiff,
    write_truncated_pdf,
)


@pytest.fixture
def cfg() -> JobConfig:
    return small_config()


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Any]:
    """A mixed folder: good PDFs and images with truth, plus the four bad inputs the v1 issue names."""
    d = tmp_path / "in"
    d.mkdir()
    truth: dict[str, dict[str, Any]] = {}
    files = {
        "inv1.pdf": write_pdf(d / "inv1.pdf", pages=1, text="Invoice 1"),
        "inv2_multi.pdf": write_pdf(d / "inv2_multi.pdf", pages=3, text="Invoice 2"),
        "scan.tiff": write_tiff(d / "scan.tiff", frames=2),
        "photo.jpg": write_image(d / "photo.jpg", "JPEG", quality=85),
        "receipt.png": write_image(d / "receipt.png", "PNG"),
    }
    for i, (name, p) in enumerate(files.items()):
        t = invoice_truth(i + 1)
        truth[name] = t
        (d / (p.stem + ".truth.json")).write_text(json.dumps({"schema": "invoice", "truth": t}))
    bad = {
        "truncated.pdf": write_truncated_pdf(d / "truncated.pdf"),
        "encrypted.pdf": write_encrypted_pdf(d / "encrypted.pdf"),
        "empty.pdf": (d / "empty.pdf"),
        "notes.pdf": (d / "notes.pdf"),
    }
    bad["empty.pdf"].write_bytes(b"")
    bad["notes.pdf"].write_text("this is a text file, not a PDF\n")
    return {"dir": d, "good": files, "bad": bad, "truth": truth}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2.5-VL checkpoint (pipeline/tinymodel.py), built once per session."""
    from pipeline.tinymodel import build_tiny_qwen25vl

    return build_tiny_qwen25vl(tmp_path_factory.mktemp("tiny") / "qwen25vl-tiny", seed=0)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """One local Ray instance per module (2 CPUs, no dashboard). A test that also uses ``s3_server``
    (session scope, so set up first) gets a Ray whose workers inherit the S3 variables."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
