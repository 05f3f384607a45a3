"""docextract eval --compare: two runs on the same truth, paired by document, with known differences."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.evaluate.compare import compare, format_comparison, sign_test
from pipeline.runner import run_job
from tests.conftest import REPO, small_config
from tests.helpers import run_cli
from tests.scripted_engine import from_truth, perturbed

SAMPLES = REPO / "data" / "samples" / "invoices"
N = 8  # documents with truth


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run A answers with the truth; run B with ``invoice_number`` damaged on documents whose id starts 0-7."""
    base = tmp_path_factory.mktemp("cmp")
    cfg = small_config(schema="invoice")
    opts = {"truth_dir": str(SAMPLES)}
    engine_cfg = cfg.engine.model_copy(update={"options": opts})
    for name, factory in (("a", from_truth), ("b", perturbed)):
        s = run_job([str(SAMPLES)], base / name, cfg, engine=factory(engine_cfg))
        assert s.succeeded == N and s.rejected == 4  # the samples' four bad inputs have no truth
    return {"a": base / "a", "b": base / "b"}


def damaged() -> int:
    stems = {p.name[: -len(".truth.json")] for p in SAMPLES.glob("*.truth.json")}
    docs = [p for p in SAMPLES.iterdir() if p.name.split(".")[0] in stems and not p.name.endswith(".truth.json")]
    assert len(docs) == N
    ids = [hashlib.sha256(p.read_bytes()).hexdigest() for p in docs]
    return sum(i[0] in "01234567" for i in ids)


def test_comparison_finds_exactly_the_damaged_field(runs):
    n = damaged()
    assert 0 < n < N  # the samples hold both kinds of document
    c = compare(SAMPLES, runs["a"], runs["b"])
    assert c.schema == "invoice" and c.documents == N
    by = {f.field: f for f in c.fields}
    inv = by["invoice_number"]
    assert inv.f1_a == 1.0 and inv.f1_b == pytest.approx(2 * (N - n) / (2 * (N - n) + 2 * n))
    assert inv.delta == pytest.approx(inv.f1_b - 1.0) and inv.ci_low <= inv.delta <= inv.ci_high < 0
    assert (inv.wins, inv.losses) == (0, n) and inv.p_sign == pytest.approx(sign_test(0, n))
    for name, f in by.items():
        if name != "invoice_number":
            assert (f.f1_a, f.f1_b, f.delta, f.wins, f.losses, f.p_sign) == (f.f1_a, f.f1_a, 0.0, 0, 0, 1.0), name
    assert (c.docs_better, c.docs_worse, c.docs_tied) == (0, n, N - n)
    assert c.exact_a == N and c.exact_b == N - n
    assert c.overall.delta < 0 and c.overall.losses == n
    # the other way round, every sign flips
    r = compare(SAMPLES, runs["b"], runs["a"])
    assert r.fields[0].field == "invoice_number" and (r.fields[0].wins, r.fields[0].losses) == (n, 0)
    assert r.overall.delta == pytest.approx(-c.overall.delta) and r.docs_better == n
    text = format_comparison(c)
    assert f"documents: B better 0, worse {n}, tied {N - n}" in text
    assert any(line.startswith("invoice_number ") and f"{-inv.delta:.3f}" in line for line in text.splitlines())


def test_sign_test():
    assert sign_test(0, 0) == 1.0
    assert sign_test(0, 5) == pytest.approx(2 / 32)
    assert sign_test(3, 3) == 1.0
    assert sign_test(10, 0) == pytest.approx(2 / 1024)


def test_cli_compare_text_json_and_report(runs, tmp_path):
    r = run_cli("eval", "--truth", SAMPLES, "--results", runs["a"], "--compare", runs["b"], "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["documents"] == N and d["docs_worse"] == damaged()
    assert {f["field"] for f in d["fields"] if f["losses"]} == {"invoice_number"}
    report = tmp_path / "cmp.json"
    r = run_cli("eval", "--truth", SAMPLES, "--results", runs["a"], "--compare", runs["b"], "--report", report)
    assert r.returncode == 0, r.stderr
    assert "B wins" in r.stdout and json.loads(report.read_text())["docs_worse"] == damaged()
    bad = run_cli("eval", "--truth", SAMPLES, "--results", runs["a"], "--compare", runs["b"], "--report", tmp_path / "x.parquet")
    assert bad.returncode == 2 and "as .json" in bad.stderr and bad.stdout == ""
