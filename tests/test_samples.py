"""The committed samples, run end to end with the scripted engine (answers = their ground truth)."""

import json
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipeline.synth import BAD_SAMPLES
from tests.helpers import REPO, SCRIPTED, run_cli

SAMPLES = REPO / "data" / "samples"


def truth_by_name(folder: Path) -> dict[str, dict]:
    out = {}
    for tf in folder.glob("*.truth.json"):
        stem = tf.name[: -len(".truth.json")]
        [doc] = [p for p in folder.iterdir() if p.name.startswith(stem + ".") and not p.name.endswith(".truth.json")]
        out[doc.name] = json.loads(tf.read_text())["truth"]
    return out


@pytest.mark.parametrize("kind", ["invoices", "receipts"])
def test_samples_run_and_read_back_equal_to_truth(kind, tmp_path):
    folder = SAMPLES / kind
    out = tmp_path / "out"
    schema = kind.rstrip("s")
    r = run_cli("run", folder, "--out", out, "--schema", schema, "--engine", SCRIPTED, "--workers", 2,
                env={"DOCEXTRACT_TRUTH_DIR": str(folder)})
    assert r.returncode == 0, r.stderr
    truth = truth_by_name(folder)
    bad = BAD_SAMPLES if kind == "invoices" else {}
    files = [p for p in folder.iterdir() if not p.name.endswith((".truth.json", ".jsonl"))]
    assert len(files) == len(truth) + len(bad)
    res = duckdb.sql(f"SELECT * FROM '{out}/results/*.parquet'").fetchall()
    cols = [c[0] for c in duckdb.sql(f"DESCRIBE SELECT * FROM '{out}/results/*.parquet'").fetchall()]
    fails = duckdb.sql(f"SELECT source_path, stage, error_type FROM '{out}/failures/*.parquet'").fetchall()
    assert len(res) + len(fails) == len(files)
    assert {Path(p).name: (st, et) for p, st, et in fails} == bad
    for row in res:
        rec = dict(zip(cols, row))
        t = truth[Path(rec["source_path"]).name]
        assert Decimal(str(t["total"])) == rec["total"]
        assert str(rec["date" if schema == "receipt" else "issue_date"]) == t["date" if schema == "receipt" else "issue_date"]
        items = "items" if schema == "receipt" else "line_items"
        assert len(rec[items]) == len(t[items])
        assert [Decimal(str(i["amount"])) for i in t[items]] == [i["amount"] for i in rec[items]]
        if schema == "invoice":
            assert rec["vendor"]["name"] == t["vendor"]["name"] and rec["currency"] == t["currency"]
        else:
            assert rec["merchant"] == t["merchant"]
