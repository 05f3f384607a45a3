"""Inputs and outputs on S3: a real S3 API server on 127.0.0.1 (moto, server mode), reached through
``pyarrow.fs`` with the standard ``AWS_*`` variables.  What the pipeline wrote is read back with
an independent pyarrow client and queried with DuckDB (over Arrow: httpfs is not needed)."""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import fs
from pipeline.errors import CouldNotStart
from pipeline.runner import run_job
from pipeline.status import status
from tests.helpers import CORPUS_FAILURES, scripted_config, write_invoices
from tests.s3_server import S3Server, s3_server  # noqa: F401  (the session fixture)


def read(s3: S3Server, out: str, table: str) -> pa.Table:
    """A table as any reader sees it: every Parquet object under ``out/table/``."""
    return pq.read_table(f"{out.removeprefix('s3://')}/{table}", filesystem=s3.fs)


def doc_ids(s3: S3Server, out: str) -> list[str]:
    return read(s3, out, "results").column("doc_id").to_pylist() + read(s3, out, "failures").column("doc_id").to_pylist()


def bucket_job(s3: S3Server, tmp_path: Path, n: int) -> tuple[Path, str, str, Any]:
    """``n`` invoices made locally and uploaded under a fresh prefix: (local dir, prefix, output URI, config)."""
    d = tmp_path / "in"
    write_invoices(d, n)
    base = s3.prefix()
    s3.upload_dir(d, f"{base}/in")
    return d, base, f"{base}/out", scripted_config(d)


def check_corpus_output(s3: S3Server, out: str, corpus: dict[str, Any]) -> None:
    """Exactly one row per document, typed values equal to the truth, failures as expected."""
    ids = doc_ids(s3, out)
    assert len(ids) == len(corpus["good"]) + len(corpus["bad"]) == len(set(ids))
    results = read(s3, out, "results")
    assert results.schema.field("total").type == pa.decimal128(18, 2)
    assert results.schema.field("issue_date").type == pa.date32()
    got = duckdb.sql("SELECT source_path, invoice_number, vendor.name, total, issue_date FROM results").fetchall()
    assert len(got) == len(corpus["good"])
    for path, number, vendor, total, issue in got:
        assert path.startswith(f"{out.rsplit('/', 1)[0]}/in/")  # Document.path is the object's URI
        t = corpus["truth"][fs.basename(path)]
        assert (number, vendor, total, str(issue)) == (
            t["invoice_number"], t["vendor"]["name"], Decimal(t["total"]), t["issue_date"]
        )
    failures = read(s3, out, "failures")
    assert {fs.basename(p): (st, et) for p, st, et in zip(*failures.select(["source_path", "stage", "error_type"]).to_pydict().values())} == CORPUS_FAILURES
    keys = s3.keys(out)
    assert not [k for k in keys if "/_tmp/" in k]
    parts = [k for k in keys if "/results/" in k or "/failures/" in k]
    assert parts and all(re.search(r"/(results|failures)/part-[^/]+\.parquet$", k) for k in parts)


def test_local_run_from_s3_to_s3_exactly_once_with_typed_values(s3_server, corpus):
    base = s3_server.prefix()
    s3_server.upload_dir(corpus["dir"], f"{base}/in")  # truth files too: discovery skips them
    out = f"{base}/out"
    s = run_job([f"{base}/in"], out, scripted_config(corpus["dir"]))
    assert (s.inputs, s.succeeded, s.failed, s.exit_code) == (9, 5, 4, 0)
    check_corpus_output(s3_server, out, corpus)
    keys = s3_server.keys(out)
    run_key = out.removeprefix("s3://") + "/run.json"
    assert run_key in keys and out.removeprefix("s3://") + f"/runs/{s.run_id}.json" in keys
    manifest = json.loads(s3_server.fs.open_input_stream(run_key).read())
    assert manifest["status"] == "ok" and manifest["counts"]["processed"] == 9


def test_resume_and_force_on_s3(s3_server, tmp_path):
    d, base, out, cfg = bucket_job(s3_server, tmp_path, 3)
    first = run_job([f"{base}/in"], out, cfg)
    assert (first.processed, first.succeeded) == (3, 3)
    write_invoices(d, 2, start=3)  # the nightly folder grew
    s3_server.upload_dir(d, f"{base}/in")
    time.sleep(2.1)  # LastModified has whole seconds: objects younger than 2 s are read, not cached
    second = run_job([f"{base}/in"], out, cfg)
    assert (second.inputs, second.skipped, second.processed) == (5, 3, 2)
    third = run_job([f"{base}/in"], out, cfg)
    assert (third.skipped, third.processed) == (5, 0)
    # nothing was uploaded since the second run: every object identified from the listing, none read
    manifest = json.loads(s3_server.fs.open_input_stream(out.removeprefix("s3://") + "/run.json").read())
    assert manifest["discovery"] == {"files_hashed": 0, "files_from_identity_cache": 5}
    st = status(out)  # reads run.json and the parts from the bucket
    assert (st.done, st.pending, st.failed_by_type) == (5, 0, {})
    forced = run_job([f"{base}/in"], out, cfg, force=True)
    assert forced.processed == 5
    ids = doc_ids(s3_server, out)
    assert len(ids) == 5 == len(set(ids))  # reconcile on the bucket: the newest row of each document
    run_ids = set(read(s3_server, out, "results").column("run_id").to_pylist())
    assert run_ids == {forced.run_id}
    # a damaged object named like a part is moved aside on the bucket, not read as "nothing done"
    junk = out.removeprefix("s3://") + "/results/part-00000000T000000000000Z-junk-0.parquet"
    with s3_server.fs.open_output_stream(junk) as f:
        f.write(b"PAR1 not really parquet PAR1")
    after = run_job([f"{base}/in"], out, cfg)
    assert (after.skipped, after.processed) == (5, 0)
    assert any("_quarantine" in w for w in after.warnings)
    moved = out.removeprefix("s3://") + "/_quarantine/results/part-00000000T000000000000Z-junk-0.parquet"
    assert s3_server.fs.get_file_info(moved).size == len(b"PAR1 not really parquet PAR1")
    assert len(doc_ids(s3_server, out)) == 5


@pytest.mark.slow
def test_ray_backend_from_s3_to_s3(s3_server, ray_cluster, corpus):
    base = s3_server.prefix()
    s3_server.upload_dir(corpus["dir"], f"{base}/in")
    out = f"{base}/out"
    cfg = scripted_config(corpus["dir"], **{"backend": "ray", "ray.cpus_per_actor": 0})
    s = run_job([f"{base}/in"], out, cfg)
    assert (s.inputs, s.succeeded, s.failed) == (9, 5, 4)
    check_corpus_output(s3_server, out, corpus)
    again = run_job([f"{base}/in"], out, cfg)
    assert (again.skipped, again.processed) == (9, 0)
    assert len(doc_ids(s3_server, out)) == 9


def test_a_second_run_on_the_same_bucket_output_does_not_start(s3_server, tmp_path):
    import datetime as dt

    _, base, out, cfg = bucket_job(s3_server, tmp_path, 2)
    lease_key = out.removeprefix("s3://") + "/_state/lease.json"

    def put_lease(age_s):
        beat = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)).isoformat()
        body = {"run_id": "20261126T000000000000Z-other", "host": "nightly-1", "pid": 4242, "heartbeat_at": beat}
        with s3_server.fs.open_output_stream(lease_key) as f:
            f.write(json.dumps(body).encode())

    put_lease(age_s=30)  # last night's run, still going
    with pytest.raises(CouldNotStart, match="another docextract run .*nightly-1, pid 4242"):
        run_job([f"{base}/in"], out, cfg)
    assert s3_server.fs.get_file_info(out.removeprefix("s3://") + "/results").type.name == "NotFound"

    put_lease(age_s=3600)  # a run that died an hour ago: its lease is taken over
    s = run_job([f"{base}/in"], out, cfg)
    assert (s.processed, s.succeeded) == (2, 2)
    assert s3_server.fs.get_file_info(lease_key).type.name == "NotFound"  # released at the end
