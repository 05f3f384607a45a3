"""A batch of synthetic documents: plan the variant mix, make each document (worker processes), write
``<stem>.truth.json`` next to it and ``truth.jsonl`` for the batch; the fixed sample set and bad inputs."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import pymupdf
from PIL import Image

from pipeline.synth.invoice_pdf import _make_invoice
from pipeline.synth.receipt_image import _make_receipt
from schemas import Invoice, Receipt

VARIANTS: dict[str, str] = {
    "pdf-digital": "invoice",
    "pdf-scan": "invoice",
    "tiff-scan": "invoice",
    "jpeg-scan": "invoice",
    "png-receipt": "receipt",
    "jpeg-photo-receipt": "receipt",
}
EXTENSIONS = {
    "pdf-digital": ".pdf",
    "pdf-scan": ".pdf",
    "tiff-scan": ".tiff",
    "jpeg-scan": ".jpg",
    "png-receipt": ".png",
    "jpeg-photo-receipt": ".jpg",
}
#: More scans than digital PDFs, about half invoices and half receipts.
DEFAULT_MIX: dict[str, float] = {
    "pdf-digital": 0.14,
    "pdf-scan": 0.16,
    "tiff-scan": 0.10,
    "jpeg-scan": 0.10,
    "png-receipt": 0.22,
    "jpeg-photo-receipt": 0.28,
}
SAMPLES_SEED = 38  # picked: 2- and 3-page invoices, multi-page PDF scan and TIFF, all 6 locales
_OWN_FILE = re.compile(r"^(\d{5}-(invoice|receipt)-[a-z-]+\.(pdf|tiff|jpg|png|truth\.json)|bad-[a-z]+\.pdf)$")


@dataclass(frozen=True)
class SynthDoc:
    path: Path
    kind: str  # "invoice" | "receipt"
    truth: dict  # schema JSON, model_dump(mode="json")
    variant: str
    pages: int
    #: Generation details useful to tests and error analysis: locale, layout,
    #: items_per_page (invoices), ...
    meta: dict = field(default_factory=dict, compare=False)
    #: field path -> [{"page": 1-based, "box": [x0, y0, x1, y1]}]: where each drawn value is printed,
    #: in fractions of the upright page (of the scan or photo as degraded)
    boxes: dict = field(default_factory=dict, compare=False)


def generate(
    out_dir: Path,
    count: int,
    seed: int = 0,
    kinds: tuple[str, ...] = ("invoice", "receipt"),
    mix: dict[str, float] | None = None,
    workers: int = 1,
) -> list[SynthDoc]:
    """Write ``count`` documents (+ ``<stem>.truth.json`` each, + ``truth.jsonl``) into ``out_dir``.

    ``mix`` maps variant names (or ``"invoice"`` / ``"receipt"``, expanded with the
    default proportions) to weights; only variants of ``kinds`` are used.  Each
    variant with a positive weight appears at least once when ``count`` allows.
    The output does not depend on ``workers``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_variants(count, seed, kinds, mix)
    jobs = [(str(out_dir), seed, i, v) for i, v in enumerate(plan)]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(workers) as pool:
            docs = pool.map(_job, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers))))
    else:
        docs = [_job(j) for j in jobs]
    with open(out_dir / "truth.jsonl", "w", encoding="utf-8") as fh:
        for d in docs:
            row = {"file": d.path.name, "schema": d.kind, "variant": d.variant, "pages": d.pages, "truth": d.truth,
                   "boxes": d.boxes}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return docs


def write_samples(out_dir: Path) -> list[SynthDoc]:
    """A dozen small documents covering every variant (fixed seed), for ``data/samples/``.

    Invoices go to ``out_dir/invoices`` and receipts to ``out_dir/receipts`` so each
    folder can be run with its own schema (``docextract run data/samples/invoices
    --schema invoice``).  Files a previous call wrote are removed first.
    """
    out_dir = Path(out_dir)
    for d in (out_dir, out_dir / "invoices", out_dir / "receipts"):
        if d.is_dir():  # only files this module names
            for f in d.iterdir():
                if f.is_file() and (f.name == "truth.jsonl" or _OWN_FILE.match(f.name)):
                    f.unlink()
    inv = generate(out_dir / "invoices", 8, seed=SAMPLES_SEED, kinds=("invoice",),
                   mix={"pdf-digital": 3, "pdf-scan": 2, "tiff-scan": 2, "jpeg-scan": 1})
    rec = generate(out_dir / "receipts", 4, seed=SAMPLES_SEED, kinds=("receipt",),
                   mix={"png-receipt": 2, "jpeg-photo-receipt": 2})
    write_bad_samples(out_dir / "invoices")
    return inv + rec


BAD_SAMPLES = {
    "bad-truncated.pdf": ("rasterize", "corrupt"),
    "bad-encrypted.pdf": ("rasterize", "encrypted"),
    "bad-empty.pdf": ("discover", "empty_file"),
    "bad-notes.pdf": ("discover", "unsupported_type"),
}


def write_bad_samples(out_dir: Path) -> dict[str, tuple[str, str]]:
    """The inputs every backlog has: a truncated PDF, an encrypted PDF, a zero-byte file and a
    text file named ``.pdf``.  Returns file name -> (expected stage, expected error type)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = pymupdf.open()
    for i in range(3):
        doc.new_page().insert_text((72, 72), f"Invoice INV-{i:04d} page {i + 1}", fontsize=14)
    full = doc.tobytes()
    doc.close()
    (out_dir / "bad-truncated.pdf").write_bytes(full[: len(full) // 2])
    enc = pymupdf.open()
    enc.new_page().insert_text((72, 72), "Confidential invoice", fontsize=14)
    aes256 = pymupdf.PDF_ENCRYPT_AES_256  # type: ignore[attr-defined]  # defined at runtime, not in the stubs
    enc.save(out_dir / "bad-encrypted.pdf", encryption=aes256, owner_pw="owner", user_pw="secret")
    enc.close()
    (out_dir / "bad-empty.pdf").write_bytes(b"")
    (out_dir / "bad-notes.pdf").write_text("Reminder: scan the March invoices.\n", encoding="utf-8")
    return dict(BAD_SAMPLES)


def plan_variants(count: int, seed: int, kinds: tuple[str, ...], mix: dict[str, float] | None) -> list[str]:
    """The variant of each of ``count`` documents: ``mix`` (variant or kind -> weight, DEFAULT_MIX when None)
    restricted to ``kinds``, split in proportion, every variant at least once when ``count`` allows.
    Raises ``ValueError`` naming an unknown kind or variant."""
    if count < 0:
        raise ValueError("count must be >= 0")
    bad = set(kinds) - {"invoice", "receipt"}
    if bad:
        raise ValueError(f"unknown kinds {sorted(bad)}")
    weights: dict[str, float] = {}
    for key, w in (mix if mix is not None else DEFAULT_MIX).items():
        if key in VARIANTS:
            weights[key] = weights.get(key, 0.0) + float(w)
        elif key in ("invoice", "receipt"):
            sub = {v: DEFAULT_MIX[v] for v in VARIANTS if VARIANTS[v] == key}
            s = sum(sub.values())
            for v, x in sub.items():
                weights[v] = weights.get(v, 0.0) + float(w) * x / s
        else:
            raise ValueError(f"unknown variant {key!r} in mix; use {sorted(VARIANTS)}")
    weights = {v: w for v, w in weights.items() if w > 0 and VARIANTS[v] in kinds}
    if not weights and count:
        raise ValueError("mix and kinds leave no variant to generate")
    names = [v for v in VARIANTS if v in weights]  # stable order
    total = sum(weights.values())
    exact = {v: count * weights[v] / total for v in names}
    quota = {v: int(exact[v]) for v in names}
    left = count - sum(quota.values())
    for v in sorted(names, key=lambda v: (-(exact[v] - quota[v]), names.index(v)))[:left]:
        quota[v] += 1
    if count >= len(names):  # every variant at least once
        for v in names:
            while quota[v] == 0:
                donor = max(names, key=lambda u: quota[u])
                quota[donor] -= 1
                quota[v] += 1
    plan = [v for v in names for _ in range(quota[v])]
    random.Random(f"plan:{seed}:{count}").shuffle(plan)
    return plan


def _job(args: tuple[str, int, int, str]) -> SynthDoc:
    out_dir, seed, index, variant = args
    rng = random.Random(f"docextract-synth:{seed}:{index}")
    stem = f"{index:05d}-{VARIANTS[variant]}-{variant}"
    return make_document(Path(out_dir), stem, variant, rng)


def make_document(out_dir: Path, stem: str, variant: str, rng: random.Random) -> SynthDoc:
    """Generate one document of ``variant`` and write it (plus its truth file)."""
    kind = VARIANTS[variant]
    path = out_dir / (stem + EXTENSIONS[variant])
    model: Invoice | Receipt
    if kind == "invoice":
        model, pages, meta = _make_invoice(path, variant, rng)
    else:
        model, pages, meta = _make_receipt(path, variant, rng)
    truth = model.model_dump(mode="json")
    boxes = meta.pop("boxes", {})
    with open(out_dir / f"{stem}.truth.json", "w", encoding="utf-8") as fh:
        json.dump({"schema": kind, "truth": truth, "boxes": boxes}, fh, ensure_ascii=False, indent=1)
    return SynthDoc(path=path, kind=kind, truth=truth, variant=variant, pages=pages, meta=meta, boxes=boxes)


def count_pages(path: Path) -> int:
    """Pages of a generated file: PDF pages, TIFF frames, 1 for PNG/JPEG."""
    path = Path(path)
    if path.suffix.lower() == ".pdf":
        with pymupdf.open(path) as doc:
            return doc.page_count
    with Image.open(path) as im:
        return getattr(im, "n_frames", 1)
