import glob
import hashlib
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.discover import InputError, discover, sniff
from pipeline.records import DocKind, ErrorType
from tests.helpers import write_image, write_pdf, write_tiff
from tests.s3_server import s3_server  # noqa: F401  (the session fixture)


@pytest.mark.parametrize(
    "head,kind",
    [
        (b"%PDF-1.7\n", DocKind.PDF),
        (b"\x89PNG\r\n\x1a\n....", DocKind.PNG),
        (b"\xff\xd8\xff\xe0", DocKind.JPEG),
        (b"II*\x00....", DocKind.TIFF),
        (b"MM\x00*....", DocKind.TIFF),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", DocKind.WEBP),
        (b"BM\x46\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00", DocKind.BMP),  # pixels at 54
        (b"GIF89a....", DocKind.GIF),
        (b"hello world", DocKind.UNKNOWN),
        (b"\x00\x00junk%PDF-1.4\n1 0 obj\n<<>>", DocKind.PDF),  # junk before the header, as some scanners write
    ],
)
def test_sniff_magic_numbers(head, kind):
    assert sniff(head) is kind


def test_directory_recursive_ids_and_types_from_bytes(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    pdf = write_pdf(tmp_path / "a" / "doc.png")  # a PDF with a misleading extension
    img = write_image(tmp_path / "a" / "b" / "scan.pdf", "JPEG")  # a JPEG named .pdf
    write_tiff(tmp_path / "t.tif")
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


# ----------------------------------------------------------------------------- issue 17: inputs that are not documents


def _discover_in_child(tmp_path, inputs, **kw):
    """discover() in a child process with a time limit: a regression that blocks (a FIFO, a device)
    fails here instead of hanging the test session (the blocked read ignores SIGINT and SIGTERM)."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from pipeline.discover import discover\n"
        "inputs, kw = json.loads(sys.argv[1])\n"
        "found = discover(inputs, **kw)\n"
        "print(json.dumps({'documents': [d.path for d in found.documents],\n"
        "  'failures': [[d.path, f.error_type.value, f.message] for d, f in found.failures],\n"
        "  'warnings': found.warnings}))\n"
    )
    try:
        r = subprocess.run(
            [sys.executable, "-c", code, json.dumps([inputs, kw])],
            capture_output=True, text=True, timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)),
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"discover({inputs}) blocked for 60 s")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_fifo_and_devices_are_failure_rows_and_never_block(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "a.pdf")
    os.mkfifo(d / "pipe.pdf")  # nobody writes to it: opening it for reading would wait forever
    (d / "zero.pdf").symlink_to("/dev/zero")  # endless bytes
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{d / 'a.pdf'}\n{d / 'pipe.pdf'}\n/dev/zero\n/dev/null\n")
    cases = [
        ([str(d)], {"follow_symlinks": "all"}, {"pipe.pdf": "FIFO", "zero.pdf": "character device"}),
        ([str(manifest)], {}, {"pipe.pdf": "FIFO", "zero": "character device", "null": "character device"}),
        (["/dev/zero", str(d / "pipe.pdf")], {}, {"zero": "character device", "pipe.pdf": "FIFO"}),  # named directly
    ]
    for inputs, kw, expected in cases:
        got = _discover_in_child(tmp_path, inputs, **kw)
        assert [os.path.basename(p) for p in got["documents"]] == ([] if "/dev/zero" in inputs else ["a.pdf"])
        fails = {os.path.basename(p): (t, m) for p, t, m in got["failures"]}
        assert set(fails) == set(expected), fails
        for name, what in expected.items():
            t, m = fails[name]
            assert t == "unsupported_type" and what in m and "not a regular file" in m, (name, t, m)


def test_our_own_output_inside_the_inputs_is_never_input(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "a.pdf")
    own = d / "out"  # the run's own output, inside the folder it reads
    (own / "_state").mkdir(parents=True)
    (own / "run.json").write_text("{}")
    (own / "results").mkdir()
    write_pdf(own / "results" / "looks-like-a-doc.pdf")  # whatever is in there: never an input
    found = discover([str(d)], exclude=[str(own)])
    assert [os.path.basename(x.path) for x in found.documents] == ["a.pdf"] and found.failures == []
    assert found.warnings == []  # the output the run was told about is skipped quietly
    # a glob or a manifest naming files in it: the same
    found = discover([str(own / "results" / "*.pdf"), str(d / "a.pdf")], exclude=[own])
    assert [os.path.basename(x.path) for x in found.documents] == ["a.pdf"]
    # the same folder reached through a symlink is the same folder
    (tmp_path / "link").symlink_to(own, target_is_directory=True)
    found = discover([str(d), str(tmp_path / "link")], exclude=[str(own)])
    assert [os.path.basename(x.path) for x in found.documents] == ["a.pdf"]


def test_other_docextract_outputs_in_the_inputs_are_skipped_with_a_warning(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "a.pdf")
    old = d / "extracted-2023"  # an output of another job, recognised by run.json + _state/
    (old / "_state").mkdir(parents=True)
    (old / "_state" / "identities.parquet").write_bytes(b"PAR1....PAR1")
    (old / "run.json").write_text('{"status": "completed"}')
    (old / "failures").mkdir()
    (old / "failures" / "part-1.parquet").write_bytes(b"PAR1....PAR1")
    locked = d / "other"  # or by the lock file a local run holds
    locked.mkdir()
    (locked / ".docextract.lock").write_text("123")
    (locked / "run.json").write_text("{}")
    just_named = d / "notes"  # a folder that only has a file called run.json is an ordinary folder
    just_named.mkdir()
    (just_named / "run.json").write_text("{}")
    found = discover([str(d)])
    assert [os.path.basename(x.path) for x in found.documents] == ["a.pdf"]
    assert [os.path.basename(x.path) for x, _ in found.failures] == ["run.json"]  # notes/run.json: a text file
    assert sum("docextract output" in w for w in found.warnings) == 2, found.warnings
    assert any("extracted-2023" in w for w in found.warnings)


def test_parquet_manifest_whose_path_column_is_not_text_is_an_input_error(tmp_path):
    write_pdf(tmp_path / "a.pdf")
    pq.write_table(pa.table({"path": [1, 2]}), tmp_path / "ints.parquet")
    with pytest.raises(InputError, match="'path' column .* not text"):
        discover([str(tmp_path / "ints.parquet")])
    pq.write_table(pa.table({"path": [[str(tmp_path / "a.pdf")]]}), tmp_path / "lists.parquet")
    with pytest.raises(InputError, match="'path' column .* not text"):
        discover([str(tmp_path / "lists.parquet")])
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="broken.parquet"):
        discover([str(tmp_path / "broken.parquet")])
    # names that are not UTF-8: a binary column, or such bytes in a text manifest, name the file
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.pdf")
    os.rename(tmp_path / "a.pdf", raw)
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9.pdf\n")
    (tmp_path / "latin1.csv").write_bytes(b"path\ncaf\xe9.pdf\n")
    pq.write_table(pa.table({"path": pa.array([raw], pa.binary())}), tmp_path / "bin.parquet")
    for name in ("bin.parquet", "latin1.txt", "latin1.csv"):
        [doc] = discover([str(tmp_path / name)]).documents
        assert os.fsencode(doc.path) == raw
    b = write_pdf(tmp_path / "b.pdf", text="b")
    pq.write_table(pa.table({"path": pa.array([str(b)], pa.large_string())}), tmp_path / "large.parquet")
    assert [d.path for d in discover([str(tmp_path / "large.parquet")]).documents] == [str(b)]


@pytest.mark.parametrize(
    "head",
    [
        b"BMW owners' club newsletter, spring edition. Dear members, ...\n",
        b"BM" + b"\x00" * 30,  # zeros: no DIB header size, no pixel offset
        b"Please find the invoice attached (saved as %PDF-1.4 by our old scanner).\n" * 3,
        b"%PDF-hello world\n1 0 obj\n",
        b"GIF89a is a format from 1989, and this is a text about it.\n",
        b"II*\x00\x00\x00\x00\x00 text",  # first IFD at offset 0
        b"MM\x00+\x00\x04\x00\x00" + b"\x00" * 8,  # BigTIFF with 4-byte offsets
        b"RIFF\x10\x00\x00\x00WEBPjunk",
        b"RIFF\x10\x00\x00\x00WAVEfmt ",
        b"\xff\xd8\xff\x00\x00",  # not a JPEG marker after SOI
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dXXXX",  # no IHDR first
        b"GIF87a\x00\x00\x10\x00\x00\x00\x00",  # zero width
    ],
)
def test_sniff_wants_the_header_structure_not_two_bytes(head):
    assert sniff(head) is DocKind.UNKNOWN


def _formats(tmp_path):
    """One real file per supported format and variant, written by PyMuPDF and Pillow."""
    from PIL import Image

    img = Image.new("RGB", (64, 48), "white")
    out = {}
    for name, fmt, kind, kw in [
        ("a.png", "PNG", DocKind.PNG, {}),
        ("a.jpg", "JPEG", DocKind.JPEG, {}),
        ("exif.jpg", "JPEG", DocKind.JPEG, {"exif": Image.Exif().tobytes()}),
        ("progressive.jpg", "JPEG", DocKind.JPEG, {"progressive": True}),
        ("a.tif", "TIFF", DocKind.TIFF, {}),
        ("big.tif", "TIFF", DocKind.TIFF, {"big_tiff": True}),
        ("lossy.webp", "WEBP", DocKind.WEBP, {}),
        ("lossless.webp", "WEBP", DocKind.WEBP, {"lossless": True}),
        ("a.bmp", "BMP", DocKind.BMP, {}),
        ("a.gif", "GIF", DocKind.GIF, {}),
    ]:
        img.save(tmp_path / name, fmt, **kw)
        out[name] = kind
    Image.new("RGBA", (64, 48), (0, 0, 0, 0)).save(tmp_path / "alpha.webp", "WEBP")  # VP8X
    out["alpha.webp"] = DocKind.WEBP
    Image.new("1", (64, 48)).save(tmp_path / "mono.bmp", "BMP")
    out["mono.bmp"] = DocKind.BMP
    Image.new("P", (64, 48)).save(tmp_path / "pal.gif", "GIF")
    out["pal.gif"] = DocKind.GIF
    img.convert("CMYK").save(tmp_path / "cmyk.tif", "TIFF")
    out["cmyk.tif"] = DocKind.TIFF
    write_pdf(tmp_path / "a.pdf")
    out["a.pdf"] = DocKind.PDF
    data = (tmp_path / "a.pdf").read_bytes()
    (tmp_path / "junk-first.pdf").write_bytes(b"\xef\xbb\xbf@PJL ENTER LANGUAGE = PDF\r\n\x00" + data)
    out["junk-first.pdf"] = DocKind.PDF
    return out


def test_sniff_recognises_every_real_variant(tmp_path):
    expected = _formats(tmp_path)
    for name, kind in expected.items():
        data = (tmp_path / name).read_bytes()
        assert sniff(data[:4096], len(data)) is kind, name
        assert sniff(data[:4096]) is kind, name


def test_sniff_recognises_the_real_corpora():
    root = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpora")
    files = glob.glob(os.path.join(root, "pdf-dev", "*.pdf"))
    files += glob.glob(os.path.join(root, "sroie-dev", "img", "*.jpg"))
    files.sort()
    if not files:
        pytest.skip("../shared/corpora is not here")
    for f in files:
        if os.path.getsize(f) == 0:
            continue  # pdf-dev/empty.pdf
        with open(f, "rb") as fh:
            head = fh.read(4096)
        assert sniff(head, os.path.getsize(f)) is (DocKind.PDF if f.endswith(".pdf") else DocKind.JPEG), f


def test_symlinks_that_leave_the_input_folders_are_refused_and_nothing_of_them_is_written(tmp_path):
    secret = tmp_path / "etc" / "shadow"
    secret.parent.mkdir()
    secret.write_bytes(b"root:$6$saltsalt$hashhashhash:19000:0:99999:7:::\n")
    other = tmp_path / "elsewhere"
    other.mkdir()
    write_pdf(other / "report.pdf")
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    write_pdf(d / "a.pdf")
    (d / "shadow.pdf").symlink_to(secret)
    (d / "outside.pdf").symlink_to(other / "report.pdf")
    (d / "inside.pdf").symlink_to(d / "a.pdf")  # same bytes as a.pdf: a duplicate
    (d / "sub" / "up.pdf").symlink_to("../a.pdf")
    (d / "linked-dir").symlink_to(other, target_is_directory=True)

    def outcome(policy):
        found = discover([str(d)], follow_symlinks=policy)
        docs = sorted(os.path.relpath(x.path, d) for x in found.documents)
        fails = {os.path.relpath(x.path, d): f for x, f in found.failures}
        return found, docs, fails

    found, docs, fails = outcome("within_roots")
    assert docs == ["a.pdf"]
    assert {k: f.error_type for k, f in fails.items()} == {
        "shadow.pdf": ErrorType.REFUSED_SYMLINK, "outside.pdf": ErrorType.REFUSED_SYMLINK
    }
    assert all(x.doc_id.startswith("path:") for x, _ in found.failures)  # not read: not even hashed
    assert any("linked-dir" in w and "outside" in w for w in found.warnings)
    assert sum(len(v) for v in found.duplicates.values()) == 2  # inside.pdf and sub/up.pdf are a.pdf

    found, docs, fails = outcome("none")
    assert docs == ["a.pdf"]
    assert set(fails) == {"shadow.pdf", "outside.pdf", "inside.pdf", "sub/up.pdf"}
    assert {f.error_type for f in fails.values()} == {ErrorType.REFUSED_SYMLINK}
    assert any("linked-dir" in w for w in found.warnings)

    found, docs, fails = outcome("all")
    assert docs == ["a.pdf", "outside.pdf"]  # linked-dir/report.pdf: the same bytes as outside.pdf
    assert {k: f.error_type for k, f in fails.items()} == {"shadow.pdf": ErrorType.UNSUPPORTED_TYPE}
    # never a byte of a file that is not a document in a message: not as text, not as hex
    msg = fails["shadow.pdf"].message
    assert "$6$" not in msg and "salt" not in msg and secret.read_bytes()[:4].hex() not in msg.replace(" ", "")


def test_unsupported_file_messages_hold_no_bytes_of_the_file(tmp_path):
    (tmp_path / "notes.pdf").write_bytes(b"password=hunter2\n")
    [(_, f)] = discover([str(tmp_path)]).failures
    assert f.error_type is ErrorType.UNSUPPORTED_TYPE
    assert "hunter2" not in f.message and b"pass".hex() not in f.message.replace(" ", "")
    assert "17 bytes" in f.message


def test_object_store_outputs_are_not_input_and_a_changed_object_is_changed(s3_server, tmp_path):  # noqa: F811
    from pipeline.rasterize import RasterError, RasterSettings, rasterize

    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "a.pdf")
    own = d / "out"
    (own / "_state").mkdir(parents=True)
    (own / "_state" / "lease.json").write_text("{}")
    (own / "run.json").write_text("{}")
    old = d / "old"
    (old / "_state").mkdir(parents=True)
    (old / "_state" / "identities.parquet").write_bytes(b"PAR1")
    (old / "run.json").write_text("{}")
    (d / "notes").mkdir()
    (d / "notes" / "run.json").write_text("{}")  # run.json alone: not an output
    base = s3_server.prefix()
    s3_server.upload_dir(d, base)
    found = discover([base], exclude=[f"{base}/out"])
    assert [x.path for x in found.documents] == [f"{base}/a.pdf"]
    assert [x.path for x, _ in found.failures] == [f"{base}/notes/run.json"]
    assert [w for w in found.warnings if "docextract output" in w] == [
        f"skipped {base}/old/: it is a docextract output folder, not input"
    ]
    # the object is overwritten between discovery and rasterizing
    [doc] = found.documents
    write_pdf(d / "a.pdf", text="another invoice under the same key")
    s3_server.upload_dir(d, base)
    with pytest.raises(RasterError) as e:
        rasterize(doc, RasterSettings(dpi=72, max_pixels=50176))
    assert e.value.error_type is ErrorType.CHANGED
