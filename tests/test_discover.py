import hashlib
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.discover import InputError, discover, sniff
from pipeline.records import DocKind, ErrorType
from tests.conftest import write_image, write_pdf, write_tiff


@pytest.mark.parametrize(
    "head,kind",
    [
        (b"%PDF-1.7\n", DocKind.PDF),
        (b"\x89PNG\r\n\x1a\n....", DocKind.PNG),
        (b"\xff\xd8\xff\xe0", DocKind.JPEG),
        (b"II*\x00....", DocKind.TIFF),
        (b"MM\x00*....", DocKind.TIFF),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", DocKind.WEBP),
        (b"BM" + b"\x00" * 30, DocKind.BMP),
        (b"GIF89a....", DocKind.GIF),
        (b"hello world", DocKind.UNKNOWN),
        (b"\x00\x00junk%PDF-1.4", DocKind.PDF),  # junk before the header, as some scanners write
    ],
)
def test_sniff_magic_numbers(head, kind):
    assert sniff(head) is kind


def test_directory_recursive_ids_and_types_from_bytes(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    pdf = write_pdf(tmp_path / "a" / "doc.png")  # a PDF with a misleading extension
    img = write_image(tmp_path / "a" / "b" / "scan.pdf", "JPEG")  # a JPEG named .pdf
    tif = write_tiff(tmp_path / "t.tif")
    found = discover([str(tmp_path)])
    kinds = {os.path.basename(d.path): d.kind for d in found.documents}
    assert kinds == {"doc.png": DocKind.PDF, "scan.pdf": DocKind.JPEG, "t.tif": DocKind.TIFF}
    ids = {os.path.basename(d.path): d.doc_id for d in found.documents}
    assert ids["doc.png"] == hashlib.sha256(pdf.read_bytes()).hexdigest()
    assert ids["scan.pdf"] == hashlib.sha256(img.read_bytes()).hexdigest()
    assert found.failures == []


def test_glob_and_manifests(tmp_path):
    a = write_pdf(tmp_path / "a.pdf")
    b = write_image(tmp_path / "b.png")
    write_image(tmp_path / "c.jpg", "JPEG")
    assert {os.path.basename(d.path) for d in discover([str(tmp_path / "*.p*")]).documents} == {"a.pdf", "b.png"}
    (tmp_path / "list.txt").write_text("# comment\na.pdf\n\n" + str(b) + "\n")
    assert {os.path.basename(d.path) for d in discover([str(tmp_path / "list.txt")]).documents} == {"a.pdf", "b.png"}
    (tmp_path / "m.csv").write_text("path,owner\na.pdf,x\n")
    assert [os.path.basename(d.path) for d in discover([str(tmp_path / "m.csv")]).documents] == ["a.pdf"]
    pq.write_table(pa.table({"path": [str(a), str(b)]}), tmp_path / "m.parquet")
    assert len(discover([str(tmp_path / "m.parquet")]).documents) == 2
    (tmp_path / "bad.csv").write_text("file\na.pdf\n")
    with pytest.raises(InputError, match="no 'path' column"):
        discover([str(tmp_path / "bad.csv")])


def test_missing_input_and_empty_glob_are_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        discover([str(tmp_path / "nope")])
    with pytest.raises(InputError, match="matched no files"):
        discover([str(tmp_path / "*.pdf")])


def test_bad_files_are_failures_not_exceptions(tmp_path):
    (tmp_path / "empty.pdf").write_bytes(b"")
    (tmp_path / "text.pdf").write_text("not a pdf")
    found = discover([str(tmp_path)])
    types = {os.path.basename(d.path): f.error_type for d, f in found.failures}
    assert types == {"empty.pdf": ErrorType.EMPTY_FILE, "text.pdf": ErrorType.UNSUPPORTED_TYPE}
    assert all(f.stage.value == "discover" for _, f in found.failures)


def test_unreadable_file_via_dangling_symlink(tmp_path):
    (tmp_path / "gone.pdf").symlink_to(tmp_path / "does-not-exist.pdf")
    found = discover([str(tmp_path)])
    [(doc, f)] = found.failures
    assert f.error_type is ErrorType.UNREADABLE and doc.doc_id.startswith("path:")


def test_duplicate_bytes_are_one_document_and_symlink_loops_end(tmp_path):
    a = write_pdf(tmp_path / "a.pdf")
    (tmp_path / "copy.pdf").write_bytes(a.read_bytes())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    found = discover([str(tmp_path)])
    assert len(found.documents) == 1
    assert sum(len(v) for v in found.duplicates.values()) == 1
    assert any("loop" in w for w in found.warnings)


def test_non_utf8_file_name(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.pdf")
    write_pdf(tmp_path / "x.pdf")
    os.rename(tmp_path / "x.pdf", raw)
    [doc] = discover([str(tmp_path)]).documents
    assert "\ufffd" in doc.display_path
    assert os.path.exists(doc.path)  # the OS path still opens the file
