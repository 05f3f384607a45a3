"""The command line as a user (or cron, or a log shipper) sees it: stdout holds the output, stderr the
logs; -q/-v/--log-format on every command; --json documents; config from file, DOCEXTRACT_* variables,
--set and flags; user errors end in a message and an exit code, never a traceback."""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
from pathlib import Path

import pytest
import typer

from pipeline.config import config_toml, load_config, resolve_config
from pipeline.runner import EXIT_COULD_NOT_START
from tests.helpers import SCRIPTED, q, run_cli, toml_file, write_pdf

TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) [\w.]+: ")


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic invoices with ground truth, and one file that is not a document."""
    d = tmp_path_factory.mktemp("docs")
    r = run_cli("synth", "--count", 3, "--kinds", "invoice", "--seed", 3, "--out", d)
    assert r.returncode == 0, r.stderr
    (d / "notes.pdf").write_text("not a pdf")
    return d


def _run(docs: Path, out: Path, *extra: object, env: dict[str, str | None] | None = None):
    return run_cli(
        "run",
        docs,
        "--out",
        out,
        "--schema",
        "invoice",
        "--engine",
        SCRIPTED,
        "--workers",
        1,
        *extra,
        env={"DOCEXTRACT_TRUTH_DIR": str(docs), **(env or {})},
    )


@pytest.fixture(scope="module")
def json_run(docs: Path, tmp_path_factory: pytest.TempPathFactory):
    """One run with --json and --log-format json, configured through every layer:
    env says batch_size 2, --set 5, the flag 3; env says max_tokens 100, --set 200; env alone first_batch_size 1."""
    out = tmp_path_factory.mktemp("out") / "o"
    env = {
        "DOCEXTRACT_RUN__BATCH_SIZE": "2",
        "DOCEXTRACT_SAMPLING__MAX_TOKENS": "100",
        "DOCEXTRACT_RUN__FIRST_BATCH_SIZE": "1",
    }
    sets = ("--set", "run.batch_size=5", "--set", "sampling.max_tokens=200")
    r = _run(docs, out, "--json", "--log-format", "json", "--batch-size", 3, *sets, env=env)
    return r, out


# ----------------------------------------------------------------------------- stdout / stderr / logging


def test_run_json_summary_is_all_of_stdout_and_every_log_line_is_json(json_run):
    r, out = json_run
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)  # the whole of stdout is one JSON document
    assert (summary["inputs"], summary["succeeded"], summary["failed"]) == (4, 3, 1)
    assert summary["failures_by_type"] == {"unsupported_type": 1}
    assert summary["out_dir"] == str(out) and summary["exit_code"] == 0 and summary["failure_rate"] == 0.0 and summary["rejected"] == 1  # the bad file is an input reject
    records = [json.loads(line) for line in r.stderr.splitlines()]
    assert records and all(set(rec) >= {"ts", "level", "logger", "message"} for rec in records)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["ts"]) for rec in records)
    progress = [rec["message"] for rec in records if rec["logger"] == "docextract.progress"]
    assert re.fullmatch(r"\[extracting\] 4/4 documents, 1 failed, \d+ pages", progress[-1])


def test_config_layers_reach_the_run(json_run):
    r, out = json_run
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "run.json").read_text())["config"]
    assert cfg["run"]["batch_size"] == 3  # flag > --set > env
    assert cfg["sampling"]["max_tokens"] == 200  # --set > env
    assert cfg["run"]["first_batch_size"] == 1  # env > default


def test_text_logs_are_timestamped_on_stderr_and_stdout_stays_empty(docs, tmp_path):
    r = _run(docs, tmp_path / "o")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    logs = [line for line in lines if TIMESTAMPED.match(line)]
    assert any("docextract.progress: [extracting] 4/4 documents" in line for line in logs)
    assert "4 documents: 3 extracted, 1 failed, 0 skipped (already done)" in r.stderr  # the summary
    # nothing else on stderr but the logs and the summary's lines
    summary = [line for line in lines if not TIMESTAMPED.match(line)]
    assert summary[0].startswith("4 documents: ") and summary[-1].startswith("output: ")


def test_quiet_keeps_the_summary_and_drops_progress_and_info(docs, tmp_path):
    r = _run(docs, tmp_path / "o", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "INFO" not in r.stderr and "[extracting]" not in r.stderr
    assert "4 documents: 3 extracted, 1 failed" in r.stderr


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and re.fullmatch(r"docextract \d+\.\d+\.\d+\n", r.stdout)


def test_every_command_takes_quiet_verbose_and_log_format():
    from pipeline.cli import app

    def leaves(cmd, path=()):
        subs = getattr(cmd, "commands", None)
        if subs is None:
            yield " ".join(path), cmd
        else:
            for name, sub in subs.items():
                yield from leaves(sub, (*path, name))

    commands = dict(leaves(typer.main.get_command(app)))
    assert {"run", "rasterize", "extract", "status", "inspect", "eval", "config show"} <= set(commands)
    for name, cmd in commands.items():
        opts = {o for p in cmd.params for o in p.opts}
        assert {"-q", "--quiet", "-v", "--verbose", "--log-format"} <= opts, name


@pytest.fixture
def clean_logging(monkeypatch):
    for var in ("VLLM_CONFIGURE_LOGGING", "VLLM_LOGGING_STREAM", "VLLM_LOGGING_LEVEL", "VLLM_LOGGING_CONFIG_PATH"):
        monkeypatch.delenv(var, raising=False)
    root = logging.getLogger()
    before = (list(root.handlers), root.level, {n: logging.getLogger(n).level for n in ("pipeline", "docextract")})
    yield
    root.handlers[:] = before[0]
    root.setLevel(before[1])
    for n, level in before[2].items():
        logging.getLogger(n).setLevel(level)
    logging.captureWarnings(False)


def _emit_library_and_own_records() -> None:
    lib, own = logging.getLogger("somelib.worker"), logging.getLogger("pipeline.runner")
    for _ in range(3):
        lib.warning("cannot set threads, skip it")  # same place, same text: vLLM does this 25 times
        own.info("batch done")
    lib.info("library detail")
    own.debug("our detail")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old API", FutureWarning, stacklevel=1)


@pytest.mark.parametrize(
    "verbosity, expected",
    [
        (0, {"cannot set threads, skip it": 1, "batch done": 3, "library detail": 0, "our detail": 0, "old API": 1}),
        (-1, {"cannot set threads, skip it": 1, "batch done": 0, "library detail": 0, "our detail": 0, "old API": 1}),
        (1, {"cannot set threads, skip it": 1, "batch done": 3, "library detail": 1, "our detail": 1, "old API": 1}),
        (2, {"cannot set threads, skip it": 3, "batch done": 3, "library detail": 1, "our detail": 1, "old API": 1}),
    ],
)
def test_levels_repeats_and_python_warnings(clean_logging, verbosity, expected):
    from pipeline.logs import setup_logging

    stream = io.StringIO()
    setup_logging(verbosity, "json", stream)
    _emit_library_and_own_records()
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    counts = {text: sum(text in rec["message"] for rec in records) for text in expected}
    assert counts == expected
    warned = [rec for rec in records if "old API" in rec["message"]]
    assert [rec["logger"] for rec in warned] == ["py.warnings"]
    assert warned[0]["message"].endswith("FutureWarning: old API")  # one line: no quoted source line


def test_setup_logging_turns_off_vllms_own_stdout_handler(clean_logging, monkeypatch):
    import os

    from pipeline.logs import setup_logging

    setup_logging(0, "text", io.StringIO())
    assert os.environ["VLLM_CONFIGURE_LOGGING"] == "0" and os.environ["VLLM_LOGGING_STREAM"] == "ext://sys.stderr"
    monkeypatch.setenv("VLLM_LOGGING_CONFIG_PATH", "/etc/my-logging.json")  # the user's own: left alone
    monkeypatch.delenv("VLLM_CONFIGURE_LOGGING")
    setup_logging(0, "text", io.StringIO())
    assert "VLLM_CONFIGURE_LOGGING" not in os.environ


@pytest.mark.vllm
def test_a_cpu_smoke_run_with_real_vllm_keeps_stdout_empty(tmp_path):
    """The issue's smoke run: vLLM's own handler wrote ~55 lines to stdout, one warning 26 times."""
    from pipeline.tinymodel import build_tiny_qwen25vl
    from tests.helpers import write_pdf

    model = build_tiny_qwen25vl(tmp_path / "tiny", seed=0)
    (tmp_path / "in").mkdir()
    for i in range(2):
        write_pdf(tmp_path / "in" / f"a{i}.pdf", text=f"Invoice {i}")
    cfg = toml_file(
        tmp_path,
        "[rasterize]\ndpi = 72\nmax_pixels = 12544\nworkers = 1\n"
        '[engine]\nprofile = "cpu"\ndtype = "float32"\nmax_model_len = 4096\n[sampling]\nmax_tokens = 16\n[run]\nmax_failure_rate = 1.0\n',
    )
    env = {"VLLM_CONFIGURE_LOGGING": None, "VLLM_LOGGING_STREAM": None, "VLLM_LOGGING_LEVEL": None}
    r = run_cli("run", tmp_path / "in", "--out", tmp_path / "o", "-c", cfg, "--model", model, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout == ""
    vllm_lines = [line for line in r.stderr.splitlines() if " vllm." in line]
    assert vllm_lines and all(TIMESTAMPED.match(line) for line in vllm_lines)  # our handler, our format
    assert not any(" INFO vllm." in line for line in vllm_lines)  # libraries at WARNING without -v
    assert sum("torch.set_num_threads" in line for line in vllm_lines) <= 1  # a repeated message shown once
    assert "2 documents: " in r.stderr


# ----------------------------------------------------------------------------- --json and user errors


def test_status_inspect_eval_print_json(docs, json_run):
    _, out = json_run
    st = run_cli("status", out, "--json")
    assert st.returncode == 0, st.stderr
    s = json.loads(st.stdout)
    assert (s["done"], s["failed_by_type"], s["pending"]) == (3, {"unsupported_type": 1}, 0)
    ins = run_cli("inspect", out, "--json", "--rows", 2)
    assert ins.returncode == 0, ins.stderr
    i = json.loads(ins.stdout)
    assert (i["results"], i["failures"], len(i["rows"])) == (3, 1, 2)
    assert i["failures_by_type"] == [{"stage": "discover", "error_type": "unsupported_type", "count": 1}]
    ev = run_cli("eval", "--truth", docs, "--results", out, "--json")
    assert ev.returncode == 0, ev.stderr
    e = json.loads(ev.stdout)
    assert e["truth_documents"] == 3 and e["exact_match_rate"] == 1.0


def test_eval_report_with_an_unknown_extension_is_a_message(docs, json_run):
    _, out = json_run
    r = run_cli("eval", "--truth", docs, "--results", out, "--report", out.parent / "x.csv")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert r.stderr.startswith("error: cannot write the report: ") and ".json or .parquet" in r.stderr
    assert not (out.parent / "x.csv").exists()


@pytest.mark.parametrize("module_text", [None, "class Broken(:\n"], ids=["missing", "syntax-error"])
def test_status_with_a_schema_that_cannot_be_imported_is_a_message(json_run, tmp_path, module_text):
    _, out = json_run
    if module_text is not None:
        (tmp_path / "brokenschema.py").write_text(module_text)
    cfg = tmp_path / "c.toml"
    cfg.write_text('schema = "brokenschema:Invoice"\n')
    r = run_cli("status", out, "-c", cfg, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "brokenschema" in r.stderr and r.stderr.startswith("error: status of ")


def test_an_unexpected_error_is_one_line_and_v_shows_the_traceback(docs, tmp_path):
    (tmp_path / "crashing_engine.py").write_text("def factory(config):\n    raise RuntimeError('GPU on fire')\n")
    args = ("run", docs, "--out", tmp_path / "o", "--engine", "crashing_engine:factory", "--workers", 1, "-q")
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines()[-1] == "error: RuntimeError: GPU on fire (run again with -v for the traceback)"
    r = run_cli(*args[:-1], "-v", cwd=tmp_path)
    assert r.returncode == 1
    assert "Traceback (most recent call last)" in r.stderr and 'crashing_engine.py", line 2' in r.stderr
    assert r.stderr.splitlines()[-1] == "error: RuntimeError: GPU on fire"


def test_usage_errors_exit_2_with_a_message(tmp_path):
    assert run_cli("config", "show", "-q", "-v").returncode == 2
    r = run_cli("config", "show", "--log-format", "xml")
    assert r.returncode == 2 and "--log-format must be text or json" in r.stderr
    r = run_cli("status", tmp_path, "--set", "run.batch_size=1")
    assert r.returncode == 2 and "status takes --set only with -c FILE" in r.stderr


# ----------------------------------------------------------------------------- configuration


def test_config_show_toml_round_trips_and_says_where_values_came_from(tmp_path):
    path = toml_file(tmp_path, '[engine]\nmodel = "/models/qwen"\n')
    env = {"DOCEXTRACT_RUN__BATCH_SIZE": "64"}
    r = run_cli("config", "show", "-c", path, "--set", "engine.extra={max_loras = 2}", env=env)
    assert r.returncode == 0, r.stderr
    assert f'model = "/models/qwen"  # file {path}' in r.stdout.splitlines()
    assert "batch_size = 64  # env DOCEXTRACT_RUN__BATCH_SIZE" in r.stdout.splitlines()
    assert "extra = {max_loras = 2}  # --set engine.extra" in r.stdout.splitlines()
    shown = toml_file(tmp_path, r.stdout)
    expected = resolve_config(path, sets=["engine.extra={max_loras = 2}"], environ=env)[0]
    assert load_config(shown) == expected
    assert load_config(toml_file(tmp_path, config_toml(load_config()))) == load_config()  # the defaults too


def test_config_show_json_and_its_errors(tmp_path):
    r = run_cli("config", "show", "--json", "--set", "run.max_attempts=3", env={"DOCEXTRACT_SCHEMA": "receipt"})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["config"]["schema"] == "receipt" and doc["config"]["run"]["max_attempts"] == 3
    assert doc["sources"] == {"schema": "env DOCEXTRACT_SCHEMA", "run.max_attempts": "--set run.max_attempts"}
    bad = run_cli("config", "show", env={"DOCEXTRACT_RUN__BATCH_SIZE": "lots"})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "DOCEXTRACT_RUN__BATCH_SIZE" in bad.stderr and bad.stdout == ""


def test_cli_run_inspect_and_stage_split(corpus, tmp_path):
    env = {"DOCEXTRACT_TRUTH_DIR": str(corpus["dir"])}
    cfg = tmp_path / "c.toml"
    cfg.write_text("[rasterize]\ndpi = 72\nmax_pixels = 50176\nworkers = 1\n[run]\nbatch_size = 4\n")
    out = tmp_path / "out"
    r = run_cli("run", str(corpus["dir"]), "--out", str(out), "-c", str(cfg), "--engine", SCRIPTED, env=env)
    assert r.returncode == 0, r.stderr
    assert "5 extracted, 4 failed" in r.stderr
    r = run_cli("inspect", str(out))
    assert r.returncode == 0 and "results: 5 rows; failures: 4 rows" in r.stdout and "encrypted" in r.stdout
    stage = tmp_path / "stage"
    r = run_cli("rasterize", str(corpus["dir"]), "--out", str(stage), "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "pages kept: 8" in r.stdout and "image tokens" in r.stdout
    out2 = tmp_path / "out2"
    r = run_cli("extract", str(stage), "--out", str(out2), "-c", str(cfg), "--engine", SCRIPTED, env=env)
    assert r.returncode == 0, r.stderr
    cols = "doc_id, invoice_number, total, pages_used"
    assert sorted(q(f"SELECT {cols} FROM '{out}/results/*.parquet'")) == sorted(q(f"SELECT {cols} FROM '{out2}/results/*.parquet'"))
    assert sorted(q(f"SELECT doc_id, error_type FROM '{out}/failures/*.parquet'")) == sorted(
        q(f"SELECT doc_id, error_type FROM '{out2}/failures/*.parquet'")
    )
    # extracting with other pixel settings than the stage was made with: refused, nothing written
    other = tmp_path / "other.toml"
    other.write_text("[rasterize]\ndpi = 72\nmax_pixels = 200704\nworkers = 1\n")
    out3 = tmp_path / "out3"
    r = run_cli("extract", str(stage), "--out", str(out3), "-c", str(other), "--engine", SCRIPTED, env=env)
    assert r.returncode == EXIT_COULD_NOT_START, r.stderr
    assert "max_pixels: stage 50176, config 200704" in r.stderr
    assert not (out3 / "results").exists()


def test_cli_errors_are_clear(tmp_path):
    r = run_cli("run", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--engine", SCRIPTED)
    assert r.returncode == EXIT_COULD_NOT_START and "input not found" in r.stderr
    write_pdf(tmp_path / "a.pdf")
    r = run_cli("run", str(tmp_path / "a.pdf"), "--out", str(tmp_path / "o"), "--engine", "no.such:thing")
    assert r.returncode == EXIT_COULD_NOT_START and "cannot import 'no.such'" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[engine]\nmodle = 'x'\n")
    r = run_cli("run", str(tmp_path / "a.pdf"), "--out", str(tmp_path / "o"), "-c", str(bad))
    assert r.returncode == EXIT_COULD_NOT_START and "unknown key 'engine.modle'" in r.stderr
    r = run_cli("schema", "receipt")
    assert r.returncode == 0 and json.loads(r.stdout)["properties"]["total"]["type"] == "number"


def test_engine_that_will_not_load_writes_nothing(corpus, tmp_path):
    out = tmp_path / "out"
    r = run_cli("run", str(corpus["dir"]), "--out", str(out), "--engine", "tests.scripted_engine:does_not_exist")
    assert r.returncode == EXIT_COULD_NOT_START and "does_not_exist" in r.stderr
    assert not (out / "failures").exists() or not any((out / "failures").glob("*.parquet"))
    assert not (out / "run.json").exists()
