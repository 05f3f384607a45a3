import io

import numpy as np
import pymupdf
import pytest
from PIL import Image

from pipeline.discover import identify
from pipeline.rasterize import RasterError, RasterSettings, fit_to_grid, rasterize, scan_image
from pipeline.records import ErrorType
from tests.helpers import write_encrypted_pdf, write_image, write_pdf, write_tiff, write_truncated_pdf

S = RasterSettings(dpi=72, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64, max_pages=4)


def doc_for(path):
    doc, failure = identify(str(path))
    assert failure is None
    return doc


@pytest.mark.parametrize("w,h", [(595, 842), (842, 595), (1, 1), (3000, 50), (10000, 10000), (28, 28), (57, 1000)])
def test_fit_to_grid_multiples_of_28_within_budget_aspect_kept(w, h):
    tw, th = fit_to_grid(w, h, 3136, 1280 * 784)
    assert tw % 28 == 0 and th % 28 == 0
    assert 3136 <= tw * th <= 1280 * 784
    if min(w, h) >= 28:
        assert abs((tw / th) / (w / h) - 1) < 0.25


def test_fit_to_grid_rejects_extreme_aspect():
    with pytest.raises(RasterError) as e:
        fit_to_grid(20000, 20, 3136, 1280 * 784)
    assert e.value.error_type is ErrorType.TOO_LARGE


def test_pdf_pages_are_fitted_rgb_and_limited_by_max_pages(tmp_path):
    out = rasterize(doc_for(write_pdf(tmp_path / "a.pdf", pages=6)), S)
    assert out.total_pages == 6 and len(out.pages) == 4
    assert [p.index for p in out.pages] == [0, 1, 2, 3]
    assert any("kept the first 4 of 6" in w for w in out.warnings)
    for p in out.pages:
        assert p.image.mode == "RGB" and p.width % 28 == 0 and p.height % 28 == 0
        assert p.width * p.height <= S.max_pixels
        assert p.height > p.width  # portrait stays portrait


def test_pdf_render_has_content(tmp_path):
    out = rasterize(doc_for(write_pdf(tmp_path / "a.pdf")), RasterSettings(dpi=100, max_pixels=800 * 1000))
    arr = np.asarray(out.pages[0].image)
    assert arr.min() < 100 and arr.max() > 200  # text/rect drawn on white


def test_absurd_media_box_is_bounded(tmp_path):
    out = rasterize(doc_for(write_pdf(tmp_path / "big.pdf", size=(14400, 14400))), S)
    assert out.pages[0].width * out.pages[0].height <= S.max_pixels


def test_tiff_every_frame_is_a_page(tmp_path):
    out = rasterize(doc_for(write_tiff(tmp_path / "t.tiff", frames=3)), S)
    assert out.total_pages == 3 and len(out.pages) == 3


@pytest.mark.parametrize(
    "mode,fmt,extra",
    [
        ("CMYK", "JPEG", {}),
        ("L", "PNG", {}),
        ("RGBA", "PNG", {}),
        ("P", "GIF", {}),
        ("RGB", "WEBP", {}),
        ("RGB", "BMP", {}),
    ],
)
def test_image_modes_become_rgb(tmp_path, mode, fmt, extra):
    p = write_image(tmp_path / f"x.{fmt.lower()}", fmt, mode=mode, **extra)
    [page] = rasterize(doc_for(p), S).pages
    assert page.image.mode == "RGB" and page.width % 28 == 0


def test_16bit_png_scaled_not_clipped(tmp_path):
    arr = (np.linspace(0, 65535, 200 * 300).reshape(300, 200)).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    [page] = rasterize(doc_for(tmp_path / "deep.png"), S).pages
    a = np.asarray(page.image)
    assert a.max() > 200 and a.min() < 30  # full range kept, not saturated to white


def test_palette_transparency_composited_on_white(tmp_path):
    im = Image.new("P", (200, 300), 0)
    im.putpalette([0, 0, 0] * 256)
    im.info["transparency"] = 0
    im.save(tmp_path / "t.png", transparency=0)
    [page] = rasterize(doc_for(tmp_path / "t.png"), S).pages
    assert np.asarray(page.image).min() > 240  # transparent black became white


def test_exif_orientation_applied(tmp_path):
    im = Image.new("RGB", (400, 200), "white")
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "o.jpg", exif=exif.tobytes())
    [page] = rasterize(doc_for(tmp_path / "o.jpg"), S).pages
    assert page.height > page.width
    assert (page.source_width, page.source_height) == (200, 400)


def test_animated_gif_first_frame_with_warning(tmp_path):
    frames = [Image.new("RGB", (100, 100), c) for c in ("red", "green", "blue")]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    out = rasterize(doc_for(tmp_path / "a.gif"), S)
    assert len(out.pages) == 1 and any("first of 3" in w for w in out.warnings)


def test_bad_files_get_precise_error_types(tmp_path):
    cases = {
        write_encrypted_pdf(tmp_path / "enc.pdf"): ErrorType.ENCRYPTED,
        write_truncated_pdf(tmp_path / "trunc.pdf"): ErrorType.CORRUPT,
    }
    jpg = io.BytesIO()
    Image.new("RGB", (300, 300), "white").save(jpg, "JPEG")
    (tmp_path / "trunc.jpg").write_bytes(jpg.getvalue()[:200])
    cases[tmp_path / "trunc.jpg"] = ErrorType.CORRUPT
    # decompression bomb: a PNG header declaring 100000 x 100000 pixels
    bomb = io.BytesIO()
    Image.new("1", (100000, 100000)).save(bomb, "PNG") if False else None
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
    (tmp_path / "bomb.png").write_bytes(png)
    cases[tmp_path / "bomb.png"] = ErrorType.TOO_LARGE
    for path, etype in cases.items():
        with pytest.raises(RasterError) as e:
            rasterize(doc_for(path), S)
        assert e.value.error_type is etype, (path.name, e.value.message)


def test_zero_page_pdf(tmp_path):
    data = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
    data += b"trailer<</Root 1 0 R>>\n%%EOF\n"
    (tmp_path / "zero.pdf").write_bytes(data)
    with pytest.raises(RasterError) as e:
        rasterize(doc_for(tmp_path / "zero.pdf"), S)
    assert e.value.error_type in (ErrorType.NO_PAGES, ErrorType.CORRUPT)


def test_broken_xref_is_repaired_with_warning(tmp_path):
    p = write_pdf(tmp_path / "x.pdf", pages=2)
    data = p.read_bytes()
    i = data.rfind(b"startxref")
    p.write_bytes(data[:i] + b"startxref\n999999\n%%EOF\n")
    out = rasterize(doc_for(p), S)
    assert len(out.pages) == 2 and any("repaired" in w for w in out.warnings)


def test_thousands_of_pages_only_renders_max_pages(tmp_path):
    doc = pymupdf.open()
    for _ in range(2000):
        doc.new_page(width=200, height=300)
    doc.save(tmp_path / "many.pdf")
    out = rasterize(doc_for(tmp_path / "many.pdf"), S)
    assert out.total_pages == 2000 and len(out.pages) == S.max_pages


def _scan_pdf(path, overlay_text=None, invisible_text=None):
    im = Image.new("L", (1654, 2339), 255)
    from PIL import ImageDraw

    d = ImageDraw.Draw(im)
    for y in range(100, 2200, 50):
        d.text((100, y), "Invoice line 12.34 EUR " * 6, fill=0)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_image(page.rect, stream=buf.getvalue())
    if overlay_text:
        page.insert_text((72, 72), overlay_text, fontsize=30)
    if invisible_text:
        page.insert_text((72, 200), invisible_text, fontsize=12, render_mode=3)
    doc.save(path)
    return path


def test_full_page_jpeg_scans_are_decoded_directly_with_the_same_picture(tmp_path):
    direct = RasterSettings(max_pixels=1280 * 28 * 28, direct_scans=True)
    render = RasterSettings(max_pixels=1280 * 28 * 28, direct_scans=False)
    for name, kw in {"plain": {}, "ocr_layer": {"invisible_text": "hidden OCR text"}}.items():
        doc = doc_for(_scan_pdf(tmp_path / f"{name}.pdf", **kw))
        a = np.asarray(rasterize(doc, direct).pages[0].image, dtype=int)
        b = np.asarray(rasterize(doc, render).pages[0].image, dtype=int)
        assert a.shape == b.shape and np.abs(a - b).mean() < 2.0, name


def test_scan_with_visible_overlay_is_rendered_not_decoded(tmp_path):
    doc = doc_for(_scan_pdf(tmp_path / "stamped.pdf", overlay_text="PAID"))
    direct = RasterSettings(max_pixels=1280 * 28 * 28, direct_scans=True)
    render = RasterSettings(max_pixels=1280 * 28 * 28, direct_scans=False)
    a = np.asarray(rasterize(doc, direct).pages[0].image)
    b = np.asarray(rasterize(doc, render).pages[0].image)
    assert (a == b).all()  # the stamp is visible, so the page was rendered, not decoded
    import pymupdf as m

    pdf = m.open(doc.path)
    assert scan_image(pdf, pdf[0], 840, 1176) is None
    plain = doc_for(_scan_pdf(tmp_path / "plain.pdf"))
    pdf2 = m.open(plain.path)
    assert scan_image(pdf2, pdf2[0], 840, 1176) is not None


# --------------------------------------------------------------------------- PDFium renders, PyMuPDF checks


def _mupdf_pixels(path, index, size):
    """The page as PyMuPDF renders it at ``size``: the reference the model saw before PDFium rendered pages."""
    with pymupdf.open(path) as pdf:
        page = pdf[index]
        r = page.rect
        pix = page.get_pixmap(matrix=pymupdf.Matrix(size[0] / r.width, size[1] / r.height), alpha=False, annots=True)
        return np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.width, 3).astype(int)


def _fixture_pdfs(tmp_path):
    """Pages that exercise what a renderer can get wrong: text and colour, /Rotate, a CropBox inside the
    MediaBox, annotations, filled-in form fields."""
    out = {"plain": write_pdf(tmp_path / "plain.pdf", pages=2)}
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_text((72, 72), "Rotated invoice 12.34", fontsize=20)
    page.draw_rect(pymupdf.Rect(72, 100, 300, 160), color=(1, 0, 0), fill=(1, 0.8, 0))
    page.set_rotation(90)
    doc.save(tmp_path / "rotated.pdf")
    out["rotated"] = tmp_path / "rotated.pdf"
    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    page.insert_text((100, 150), "Inside the crop box", fontsize=18)
    page.insert_text((10, 780), "OUTSIDE", fontsize=18)
    page.set_cropbox(pymupdf.Rect(50, 50, 450, 650))
    doc.save(tmp_path / "cropped.pdf")
    out["cropped"] = tmp_path / "cropped.pdf"
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_text((72, 100), "Annotated", fontsize=20)
    page.add_highlight_annot(pymupdf.Rect(72, 82, 200, 104))
    page.add_freetext_annot(pymupdf.Rect(72, 320, 400, 360), "A free text note", fontsize=16)
    doc.save(tmp_path / "annotated.pdf")
    out["annotated"] = tmp_path / "annotated.pdf"
    out["form"] = _form_pdf(tmp_path / "form.pdf")
    return out


def _form_pdf(path):
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_text((72, 100), "Invoice form", fontsize=20)
    field = pymupdf.Widget()
    field.field_type = pymupdf.PDF_WIDGET_TYPE_TEXT
    field.field_name = "total"
    field.field_value = "TOTAL 1234.56"
    field.rect = pymupdf.Rect(72, 200, 400, 240)
    field.text_fontsize = 18
    page.add_widget(field)
    doc.save(path)
    return path


def test_pdf_pages_look_as_pymupdf_renders_them(tmp_path):
    s = RasterSettings()
    for name, path in _fixture_pdfs(tmp_path).items():
        out = rasterize(doc_for(path), s)
        with pymupdf.open(path) as pdf:
            assert len(out.pages) == pdf.page_count
            for page in out.pages:
                r = pdf[page.index].rect  # the visible box, /Rotate applied
                assert (page.width, page.height) == fit_to_grid(r.width * s.dpi / 72, r.height * s.dpi / 72,
                                                                s.min_pixels, s.max_pixels), name
                got = np.asarray(page.image, dtype=int)
                want = _mupdf_pixels(path, page.index, page.image.size)
                assert got.shape == want.shape, name
                assert np.abs(got - want).mean() < 2.0, (name, np.abs(got - want).mean())


def test_pdf_colours_are_rgb(tmp_path):
    out = rasterize(doc_for(write_pdf(tmp_path / "a.pdf")), RasterSettings())
    page = out.pages[0]
    x, y = round(186 / 595 * page.width), round(130 / 842 * page.height)  # inside the rect filled (0.8, 0.8, 1)
    r, g, b = page.image.getpixel((x, y))
    assert abs(r - 204) <= 3 and abs(g - 204) <= 3 and b >= 250


def test_rotated_page_is_upright_and_landscape(tmp_path):
    path = _fixture_pdfs(tmp_path)["rotated"]
    [page] = rasterize(doc_for(path), RasterSettings()).pages
    assert page.width > page.height  # /Rotate 90 of a portrait page: shown landscape
    got = np.asarray(page.image, dtype=int)
    want = _mupdf_pixels(path, 0, page.image.size)
    dark_got, dark_want = got.sum(axis=2) < 300, want.sum(axis=2) < 300
    assert dark_want.sum() > 100 and (dark_got & dark_want).sum() > 0.6 * dark_want.sum()  # text in the same place


def test_filled_form_fields_are_drawn(tmp_path):
    path = _form_pdf(tmp_path / "form.pdf")
    [page] = rasterize(doc_for(path), RasterSettings()).pages
    sx, sy = page.width / 595, page.height / 842
    box = (round(72 * sx), round(200 * sy), round(400 * sx), round(240 * sy))  # the field's rectangle
    got = np.asarray(page.image.crop(box), dtype=int).sum(axis=2) < 384
    want = _mupdf_pixels(path, 0, page.image.size)[box[1] : box[3], box[0] : box[2]].sum(axis=2) < 384
    assert want.sum() > 200  # the value is there in PyMuPDF's rendering
    assert got.sum() > 0.7 * want.sum()  # and in ours


def test_annotations_are_drawn(tmp_path):
    path = _fixture_pdfs(tmp_path)["annotated"]
    [page] = rasterize(doc_for(path), RasterSettings()).pages
    sx, sy = page.width / 595, page.height / 842
    img = np.asarray(page.image, dtype=int)
    hl = img[round(84 * sy) : round(102 * sy), round(74 * sx) : round(198 * sx)]  # the highlight's box
    yellow = (hl[..., 0] > 200) & (hl[..., 1] > 200) & (hl[..., 2] < 120)
    assert yellow.mean() > 0.3
    box = (slice(round(320 * sy), round(360 * sy)), slice(round(72 * sx), round(400 * sx)))  # the free-text note
    want = (_mupdf_pixels(path, 0, page.image.size)[box].sum(axis=2) < 384).sum()
    assert want > 100 and (img[box].sum(axis=2) < 384).sum() > 0.7 * want
