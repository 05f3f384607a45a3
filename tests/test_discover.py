import hashlib
import os
import time

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


# ----------------------------------------------------------------------------- identity cache


def _ids(found):
    return {os.path.basename(d.path): (d.doc_id, d.kind) for d in found.documents}


def _age(d, seconds=3600):
    """Files written by a test are seconds old: too fresh to cache (the 2 s racy rule). Back-date them."""
    t = time.time_ns() - seconds * 1_000_000_000
    for p in d.iterdir():
        os.utime(p, ns=(t, t))


def test_identity_cache_skips_unchanged_files_and_rereads_changed_ones(tmp_path):
    from pipeline.discover import IdentityCache

    d = tmp_path / "in"
    d.mkdir()
    for i in range(5):
        write_pdf(d / f"doc{i}.pdf", text=f"doc {i}")
    write_image(d / "photo.png")
    (d / "notes.txt").write_text("not a document")  # unsupported: never cached, looked at every time
    _age(d)
    out = tmp_path / "out"

    cache = IdentityCache.load(out)  # nothing there yet
    first = discover([str(d)], cache=cache)
    assert (first.hashed, first.cached) == (7, 0)
    cache.save(out)
    assert (out / "_state" / "identities.parquet").is_file()

    cache = IdentityCache.load(out)
    second = discover([str(d)], cache=cache)
    assert (second.hashed, second.cached) == (1, 6)  # only notes.txt read again
    assert _ids(second) == _ids(first)
    assert [f.error_type for _, f in second.failures] == [ErrorType.UNSUPPORTED_TYPE]
    cache.save(out)

    # changed content, same size: caught by the mtime
    p = d / "doc1.pdf"
    data = p.read_bytes()
    p.write_bytes(data.replace(b"Written by", b"Writ7en by"))
    assert p.read_bytes() != data
    assert p.stat().st_size == len(data)
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    # grown file: caught by the size
    with open(d / "doc2.pdf", "ab") as f:
        f.write(b"\n%trailer\n")
    cache = IdentityCache.load(out)
    third = discover([str(d)], cache=cache)
    assert (third.hashed, third.cached) == (3, 4)
    ids = _ids(third)
    assert ids["doc1.pdf"][0] == hashlib.sha256(p.read_bytes()).hexdigest() != _ids(first)["doc1.pdf"][0]
    assert ids["doc2.pdf"][0] == hashlib.sha256((d / "doc2.pdf").read_bytes()).hexdigest()
    assert ids["doc3.pdf"] == _ids(first)["doc3.pdf"]


def test_identity_cache_that_cannot_be_read_means_every_file_is_read(tmp_path, caplog):
    from pipeline.discover import IdentityCache

    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "a.pdf")
    out = tmp_path / "out"
    (out / "_state").mkdir(parents=True)
    (out / "_state" / "identities.parquet").write_bytes(b"PAR1 this is not parquet")
    cache = IdentityCache.load(out)
    assert "ignoring the identity cache" in caplog.text
    found = discover([str(d)], cache=cache)
    assert (found.hashed, found.cached, len(found.documents)) == (1, 0, 1)


def test_identity_cache_keeps_non_utf8_names(tmp_path):
    from pipeline.discover import IdentityCache

    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "x.pdf")
    os.rename(d / "x.pdf", os.path.join(os.fsencode(d), b"caf\xe9.pdf"))  # Latin-1 byte: not UTF-8
    t = time.time_ns() - 3600 * 1_000_000_000
    os.utime(os.path.join(os.fsencode(d), b"caf\xe9.pdf"), ns=(t, t))
    cache = IdentityCache()
    first = discover([str(d)], cache=cache)
    cache.save(tmp_path / "out")
    again = discover([str(d)], cache=IdentityCache.load(tmp_path / "out"))
    assert (again.hashed, again.cached) == (0, 1)
    assert again.documents[0].path == first.documents[0].path


def test_identity_cache_does_not_trust_fresh_files_or_restored_mtimes(tmp_path):
    from pipeline.discover import IdentityCache

    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "fresh.pdf", text="just written")  # modified < 2 s ago: a same-size rewrite could keep its mtime
    write_pdf(d / "old.pdf", text="old")
    t = time.time_ns() - 3600 * 1_000_000_000
    os.utime(d / "old.pdf", ns=(t, t))
    cache = IdentityCache()
    discover([str(d)], cache=cache)
    assert [os.path.basename(p) for p in cache.seen] == ["old.pdf"]
    cache.save(tmp_path / "out")

    # cp -p / rsync -a style: other bytes of the same size, the old mtime put back. The ctime (which
    # no tool can set) gives it away.
    p = d / "old.pdf"
    data = p.read_bytes()
    p.write_bytes(data.replace(b"Written by", b"Writ7en by"))
    os.utime(p, ns=(t, t))
    assert p.stat().st_size == len(data) and p.stat().st_mtime_ns == t
    again = discover([str(d)], cache=IdentityCache.load(tmp_path / "out"))
    assert (again.hashed, again.cached) == (2, 0)
    assert _ids(again)["old.pdf"][0] == hashlib.sha256(p.read_bytes()).hexdigest()
