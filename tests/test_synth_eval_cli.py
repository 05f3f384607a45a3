"""synth -> run -> eval from the shell: a perfect engine scores 1.0 everywhere; known damage shows exactly."""

import json

from tests.helpers import run_cli


def cli(*args, env=None):
    r = run_cli(*args, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_synth_run_eval_end_to_end(tmp_path):
    s = tmp_path / "s"
    r = cli("synth", "--count", 40, "--out", s, "--kinds", "invoice", "--seed", 7, "--workers", 2)
    assert "40 documents" in r.stdout
    env = {"DOCEXTRACT_TRUTH_DIR": str(s)}
    cfg = tmp_path / "c.toml"
    cfg.write_text("[rasterize]\nmax_pixels = 200704\n[run]\nbatch_size = 16\n")
    cli("run", s, "--out", tmp_path / "good", "-c", cfg, "--schema", "invoice", "--engine", "tests.scripted_engine:from_truth", env=env)
    cli("eval", "--truth", s, "--results", tmp_path / "good", "--report", tmp_path / "good.json")
    rep = json.loads((tmp_path / "good.json").read_text())
    assert rep["truth_documents"] == 40 and rep["exact_match_rate"] == 1.0
    assert all(f["f1"] == 1.0 for f in rep["fields"]) and rep["overall"]["f1"] == 1.0

    cli("run", s, "--out", tmp_path / "bad", "-c", cfg, "--schema", "invoice", "--engine", "tests.scripted_engine:perturbed", env=env)
    cli("eval", "--truth", s, "--results", tmp_path / "bad", "--report", tmp_path / "bad.json")
    rep = json.loads((tmp_path / "bad.json").read_text())
    import hashlib

    damaged = sum(
        1
        for p in s.iterdir()
        if p.suffix in (".pdf", ".tiff", ".jpg", ".png") and hashlib.sha256(p.read_bytes()).hexdigest()[0] in "01234567"
    )
    assert 0 < damaged < 40
    fields = {f["field"]: f for f in rep["fields"]}
    num = fields["invoice_number"]
    assert (num["tp"], num["fp"], num["fn"]) == (40 - damaged, damaged, damaged)
    assert abs(num["precision"] - (40 - damaged) / 40) < 1e-9
    assert all(f["f1"] == 1.0 for name, f in fields.items() if name != "invoice_number")
    assert rep["exact_match_rate"] == (40 - damaged) / 40
