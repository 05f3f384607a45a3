"""pipeline/output.py through run_job: one writer per output, parts that are damaged or cannot be read."""

import duckdb
import pyarrow.parquet as pq
import pytest

from pipeline.errors import CouldNotStart
from pipeline.runner import run_job
from tests.helpers import all_rows, invoice_truth, make_docs, q, small_config
from tests.scripted_engine import ScriptedEngine


def test_second_writer_on_the_same_output_cannot_start(tmp_path):
    import pyarrow as pa

    from pipeline.output import Output

    make_docs(tmp_path / "in", 1)
    first = Output(tmp_path / "out", "first-run", pa.schema([]), "zstd", lease_ttl_s=600, on_lease_lost=print)
    first.lock()
    try:
        with pytest.raises(CouldNotStart, match="another docextract run"):
            run_job([str(tmp_path / "in")], tmp_path / "out", small_config(), engine=ScriptedEngine({}))
    finally:
        first.close()
    s = run_job([str(tmp_path / "in")], tmp_path / "out", small_config(), engine=ScriptedEngine(callback=lambda r: invoice_truth()))
    assert s.succeeded == 1


def test_damaged_part_is_quarantined_and_its_documents_redone(tmp_path):
    # A results part damaged on disk (bit rot, a bad copy): the next run moves it aside, so
    # `SELECT ... FROM results/*.parquet` works again, and processes its documents again.
    make_docs(tmp_path / "in", 6)
    out = tmp_path / "out"
    cfg = small_config(**{"run.batch_size": 3})
    engine = ScriptedEngine(callback=lambda r: invoice_truth(), record=False)
    first = run_job([str(tmp_path / "in")], out, cfg, engine=engine)
    assert first.succeeded == 6
    parts = sorted((out / "results").glob("part-*.parquet"))
    assert len(parts) == 2
    lost = {r[0] for r in q(f"SELECT doc_id FROM '{parts[0]}'")}
    parts[0].write_bytes(parts[0].read_bytes()[: len(parts[0].read_bytes()) // 2])  # truncated
    with pytest.raises(duckdb.Error):
        q(f"SELECT count(*) FROM '{out}/results/*.parquet'")
    again = run_job([str(tmp_path / "in")], out, cfg, engine=engine)
    assert (again.skipped, again.processed, again.succeeded) == (6 - len(lost), len(lost), len(lost))
    assert any("_quarantine" in w and parts[0].name in w for w in again.warnings)
    assert (out / "_quarantine" / "results" / parts[0].name).is_file()
    rows = all_rows(out)
    assert sorted(d for d, _ in rows) == sorted({d for d, _ in rows}) and len(rows) == 6  # exactly once


def test_output_part_that_cannot_be_read_stops_the_run_before_writing(tmp_path, monkeypatch):
    # An I/O error reading our own output (permissions, a store that does not answer) must not be
    # taken as "no such rows": that would process those documents a second time.
    make_docs(tmp_path / "in", 2)
    out = tmp_path / "out"
    cfg = small_config()
    engine = ScriptedEngine(callback=lambda r: invoice_truth(), record=False)
    run_job([str(tmp_path / "in")], out, cfg, engine=engine)
    before = sorted(p.name for p in (out / "results").iterdir())
    real = pq.read_table  # the fault is injected at pyarrow's file read: root ignores file permissions

    def failing(source, *args, **kwargs):
        if "results" in str(source):
            raise PermissionError(13, "Permission denied", str(source))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", failing)
    with pytest.raises(CouldNotStart, match="cannot read the existing output"):
        run_job([str(tmp_path / "in")], out, cfg, engine=engine, force=True)
    monkeypatch.setattr(pq, "read_table", real)
    assert sorted(p.name for p in (out / "results").iterdir()) == before  # nothing written, nothing moved
    assert not (out / "_quarantine").exists()


def test_bit_rot_inside_a_part_and_a_part_missing_columns_are_quarantined(tmp_path):
    # pyarrow reports a damaged page or footer as OSError (not ArrowInvalid): still damage, not an
    # I/O error, so the part is moved aside rather than stopping every later run.
    make_docs(tmp_path / "in", 6)
    out = tmp_path / "out"
    cfg = small_config(**{"run.batch_size": 2})
    engine = ScriptedEngine(callback=lambda r: invoice_truth(), record=False)
    run_job([str(tmp_path / "in")], out, cfg, engine=engine)
    parts = sorted((out / "results").glob("part-*.parquet"))
    assert len(parts) == 3
    data = bytearray(parts[0].read_bytes())
    for i in range(len(data) - 200, len(data) - 12):  # scribble over the footer, keep the magic bytes
        data[i] ^= 0x5A
    parts[0].write_bytes(bytes(data))
    import pyarrow as pa

    pq.write_table(pa.table({"doc_id": ["x"]}), parts[1])  # a stranger's table named like a part
    again = run_job([str(tmp_path / "in")], out, cfg, engine=engine)
    moved = sorted(p.name for p in (out / "_quarantine" / "results").iterdir())
    assert moved == sorted([parts[0].name, parts[1].name])
    assert again.processed == 4 and again.skipped == 2
    rows = all_rows(out)
    assert len(rows) == 6 == len({d for d, _ in rows})
