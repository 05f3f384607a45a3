#!/usr/bin/env python
"""Make docs/review.png, the README's picture of the review page, from the samples.

    .venv/bin/python scripts/review_screenshot.py [--set KEY=VALUE ...] [--keep DIR] [--out docs/review.png]

1. runs the job on data/samples/invoices with the scripted truth engine (tests/scripted_engine.py: it
   answers with the samples' ground truth), passing any --set (e.g. to turn the evidence stage on);
2. when the run wrote no evidence/ table (before the evidence stage exists, or with it off), writes
   evidence rows and review flags itself (tests/review_fixtures.py: each value searched in the PDF's
   text layer with PyMuPDF; a value not found is flagged "not found on the page", vendor.tax_id gets
   a made-up low confidence 0.41 so that kind of flag shows too; scans get no evidence);
3. writes the review (docextract's write_review) and screenshots the page of a flagged digital
   invoice with headless Chromium, 1400x900, quantised to 256 colours (< 300 KB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = "00002-invoice-pdf-digital.pdf"  # a one-page digital invoice: boxes from its text layer


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        sys.exit("review_screenshot: chromium not found (scripts/setup installs Debian's package as root)")
    return exe


def _screenshot(page: Path, png: Path, profile: Path, size: tuple[int, int]) -> None:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--hide-scrollbars", "--force-device-scale-factor=1",
           f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=2000", f"--screenshot={png}", page.as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config key=value for the run")
    ap.add_argument("--keep", type=Path, help="keep the run and the report in this directory")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "review.png")
    args = ap.parse_args()
    os.chdir(REPO)  # the scripted engine finds the truth under data/samples
    sys.path.insert(0, str(REPO))
    from PIL import Image

    from pipeline.config import load_config
    from pipeline.review import load_review, write_review
    from pipeline.review.render import doc_file
    from pipeline.runner import run_job
    from tests.review_fixtures import ground_pdf_results
    from tests.scripted_engine import from_truth

    work = args.keep or Path(tempfile.mkdtemp(prefix="review-shot-"))
    out, html = work / "out", work / "html"
    config = load_config(None, {"schema": "invoice", "run.progress": False}, sets=args.sets)
    run_job(["data/samples/invoices"], out, config, engine=from_truth(config.engine), force=True)
    if not (out / "evidence").is_dir():
        ground_pdf_results(out, low={"vendor.tax_id": 0.41})
    written = write_review(out, html)
    docs = load_review(out).docs
    doc = next((d for d in docs if d.source_path.endswith(SAMPLE)), docs[0])
    raw = work / "raw.png"
    _screenshot(html / "docs" / doc_file(doc.doc_id), raw, work / "profile", (1400, 900))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.open(raw).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size / 1e3:.0f} KB, from {written.index} ({doc.source_path})")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":  # the rasterizing worker processes import this script again
    main()
