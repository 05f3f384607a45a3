"""The review page in a real browser: headless Chromium (Debian's package, installed by scripts/setup
when running as root) loads the page from disk, runs its script, and we assert on the DOM it ends
with and on the pixels it draws.  Skipped, saying why, when Chromium is not installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.review import write_review
from pipeline.review.assets import BOX_COLOUR, FLAG_COLOUR
from pipeline.review.render import doc_file
from tests.review_fixtures import INVOICE_BOX, PAGE_COLOUR, TOTAL_BOX, XSS, Sample, make_sample

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/setup installs it as root)")
WIDTH, HEIGHT = 1400, 1300


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'profile'}", "--hide-scrollbars", "--force-device-scale-factor=1",
           f"--window-size={WIDTH},{HEIGHT}", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sample, Path]:
    root = tmp_path_factory.mktemp("browser")
    sample = make_sample(root)
    write_review(sample.out, root / "html")
    return sample, root / "html" / "docs" / doc_file(sample.ids["flagged.png"])


def test_dom_after_scripts(page: tuple[Sample, Path], tmp_path: Path) -> None:
    _, doc = page
    dom = chromium(tmp_path, "--virtual-time-budget=2000", "--dump-dom", doc.as_uri()).stdout
    assert re.search(r'<html lang="en" class="js"', dom)  # our script ran...
    assert "pwned" not in re.search(r"<title>(.*?)</title>", dom).group(1)  # type: ignore[union-attr]
    assert "data-pwned" not in dom.split("<body")[1].split(">")[0]  # ...the document's markup did not
    assert XSS.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in dom  # shown as text
    boxes: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"<a ([^>]*class=\"box[^>]*)>", dom):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))
        boxes[attrs["data-field"]] = attrs
    assert set(boxes) == {"invoice_number", "total"}
    assert boxes["invoice_number"]["style"] == "left:10.000%;top:5.000%;width:30.000%;height:5.000%"
    assert boxes["total"]["style"] == "left:55.000%;top:80.000%;width:35.000%;height:6.000%"
    assert boxes["total"]["class"] == "box flagged" and boxes["invoice_number"]["class"] == "box"
    flagged_rows = re.findall(r'<tr id="f\d+" class="flagged" data-field="([^"]+)"', dom)
    assert "total" in flagged_rows and "vendor.name" in flagged_rows and "invoice_number" not in flagged_rows


def _bbox(img: Image.Image, colour: tuple[int, int, int], tol: int, within: tuple[int, int, int, int]) -> tuple[int, ...]:
    """Bounding box (x0, y0, x1, y1 exclusive) of the pixels near ``colour`` inside ``within``."""
    x0, y0, x1, y1 = within
    px = np.asarray(img, dtype=np.int16)[y0:y1, x0:x1]
    ys, xs = np.nonzero((np.abs(px - np.array(colour, dtype=np.int16)) <= tol).all(axis=2))
    assert len(xs), f"no pixel of colour {colour} in {within}"
    return x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def test_boxes_drawn_over_the_evidence(page: tuple[Sample, Path], tmp_path: Path) -> None:
    _, doc = page
    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--virtual-time-budget=2000", doc.as_uri())
    img = Image.open(shot).convert("RGB")
    assert img.size == (WIDTH, HEIGHT)
    left = (0, 0, WIDTH * 3 // 5, HEIGHT)  # the pages column (the flags panel on the right is red too)
    sheet = _bbox(img, PAGE_COLOUR, 12, left)  # the page image: its background colour, JPEG-compressed
    w, h = sheet[2] - sheet[0], sheet[3] - sheet[1]
    assert w > 300 and h > 400 and abs(w / h - 0.75) < 0.04  # the whole page (600x800, fitted to the 28 px grid) is in view
    for box, colour in ((TOTAL_BOX, FLAG_COLOUR), (INVOICE_BOX, BOX_COLOUR)):
        want = (sheet[0] + box[0] * w, sheet[1] + box[1] * h, sheet[0] + box[2] * w, sheet[1] + box[3] * h)
        got = _bbox(img, _rgb(colour), 40, sheet)
        assert all(abs(g - e) <= 3 for g, e in zip(got, want, strict=True)), (colour, got, want)


def _has_colour(img: Image.Image, colour: tuple[int, int, int], within: tuple[int, int, int, int]) -> bool:
    try:
        _bbox(img, colour, 20, within)
    except AssertionError:
        return False
    return True


def test_a_link_to_a_box_highlights_it_without_script(page: tuple[Sample, Path], tmp_path: Path) -> None:
    """A field's row links to its box (#b<n>); the box jumped to is outlined by CSS alone (:target)."""
    _, doc = page
    href = re.search(r'<tr id="f(\d+)"[^>]*data-field="total"', doc.read_text())
    assert href is not None
    left = (0, 0, WIDTH * 3 // 5, HEIGHT)
    plain, jumped = tmp_path / "plain.png", tmp_path / "jumped.png"
    chromium(tmp_path, f"--screenshot={plain}", doc.as_uri())
    chromium(tmp_path, f"--screenshot={jumped}", doc.as_uri() + f"#b{href.group(1)}")
    from pipeline.review.assets import HIGHLIGHT_COLOUR

    assert not _has_colour(Image.open(plain).convert("RGB"), _rgb(HIGHLIGHT_COLOUR), left)
    assert _has_colour(Image.open(jumped).convert("RGB"), _rgb(HIGHLIGHT_COLOUR), left)
