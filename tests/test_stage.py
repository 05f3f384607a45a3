"""Stage directories (``docextract rasterize`` then ``extract``): one consistent set of documents,
each extracted once, and the same locations as ``run`` or a clear refusal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import CouldNotStart, StageError
from pipeline.rasterize import RasterSettings
from pipeline.runner import EXIT_COULD_NOT_START, run_job
from pipeline.stage import write_stage
from tests.helpers import REPO, doc_ids, invoice_truth, make_docs, run_cli, small_config, write_pdf
from tests.s3_server import s3_server  # noqa: F401  (the session fixture)
from tests.scripted_engine import ScriptedEngine

SETTINGS = RasterSettings.from_config(small_config().rasterize, small_config().words)  # what run_job would use


def _docs(d: Path, n: int, start: int = 0) -> Path:
    make_docs(d, n, start, name="doc{:02d}.pdf", text="Invoice {}", pages_cycle=3)
    return d


def _extract(stage: Path, out: Path):
    return run_job([str(stage)], out, small_config(), engine=ScriptedEngine(callback=lambda r: invoice_truth()),
                   stage_dir=stage)


def test_rasterizing_again_into_a_stage_replaces_it(tmp_path):
    # Before: leftover page parts made extract yield each document twice (44 documents -> 88 rows).
    stage = tmp_path / "stage"
    write_stage([str(_docs(tmp_path / "a", 6))], stage, SETTINGS, workers=1, timeout_s=30, part_pages=2)
    write_stage([str(_docs(tmp_path / "b", 4))], stage, SETTINGS, workers=1, timeout_s=30, part_pages=3)
    s = _extract(stage, tmp_path / "out")
    assert (s.inputs, s.succeeded) == (4, 4)
    ids = doc_ids(tmp_path / "out")
    assert len(ids) == 4 == len(set(ids))
    assert not list(stage.glob(".building-*"))


def test_the_same_inputs_twice_into_a_stage_give_one_row_each(tmp_path):
    d = _docs(tmp_path / "in", 5)
    stage = tmp_path / "stage"
    for part_pages in (1, 4):  # the second set has fewer parts: the first one's later parts are left over
        write_stage([str(d)], stage, SETTINGS, workers=1, timeout_s=30, part_pages=part_pages)
    _extract(stage, tmp_path / "out")
    ids = doc_ids(tmp_path / "out")
    assert len(ids) == 5 == len(set(ids))


def test_duplicate_pages_in_a_stage_are_given_once(tmp_path):
    # A stage copied over another by hand: two copies of every page part.
    import shutil

    stage = tmp_path / "stage"
    write_stage([str(_docs(tmp_path / "in", 5))], stage, SETTINGS, workers=1, timeout_s=30, part_pages=2)
    for part in sorted((stage / "pages").glob("part-*.parquet")):
        shutil.copy(part, part.with_name("part-9" + part.name[len("part-"):]))
    s = _extract(stage, tmp_path / "out")
    assert s.succeeded == 5 and len(doc_ids(tmp_path / "out")) == 5


def test_a_rasterize_killed_midway_leaves_the_old_stage_whole(tmp_path):
    # Before: a rasterize killed while writing into an old stage gave good documents permanent corrupt rows.
    stage = tmp_path / "stage"
    write_stage([str(_docs(tmp_path / "a", 6))], stage, SETTINGS, workers=1, timeout_s=30, part_pages=2)
    big = _docs(tmp_path / "big", 40)
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
              "from pipeline.rasterize import RasterSettings\nfrom pipeline.stage import write_stage\n"
              "from tests.helpers import small_config\n"
              f"write_stage([{str(big)!r}], {str(stage)!r}, RasterSettings.from_config(small_config().rasterize), "
              "workers=1, timeout_s=30, part_pages=1)\n")
    p = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    import time

    deadline = time.monotonic() + 60
    while not list(stage.glob(".building-*/part-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.02)
    p.kill()
    p.wait()
    s = _extract(stage, tmp_path / "out")
    assert (s.inputs, s.succeeded, s.failed) == (6, 6, 0)


def test_object_storage_stage_is_refused_and_extract_writes_to_object_storage(tmp_path):
    with pytest.raises(StageError, match="local folder"):
        write_stage([str(_docs(tmp_path / "in", 1))], "s3://bucket/stage", SETTINGS, workers=1, timeout_s=30)
    with pytest.raises(CouldNotStart, match="local folder"):
        run_job(["s3://bucket/stage"], tmp_path / "o", small_config(), engine=ScriptedEngine({}),
                stage_dir="s3://bucket/stage")
    r = run_cli("rasterize", tmp_path / "in", "--out", "s3://bucket/x", cwd=tmp_path, timeout=120)
    assert r.returncode == EXIT_COULD_NOT_START and "local folder" in r.stderr
    assert not (tmp_path / "s3:").exists()  # before: a local folder ./s3:/bucket/x and exit 0


@pytest.mark.slow
def test_extract_to_object_storage(s3_server, tmp_path):
    stage = tmp_path / "stage"
    write_stage([str(_docs(tmp_path / "in", 3))], stage, SETTINGS, workers=1, timeout_s=30)
    out = f"{s3_server.prefix()}/extracted"
    s = run_job([str(stage)], out, small_config(), engine=ScriptedEngine(callback=lambda r: invoice_truth()),
                stage_dir=stage)
    assert s.succeeded == 3
    import pyarrow.parquet as pq

    rows = pq.read_table(f"{out.removeprefix('s3://')}/results", filesystem=s3_server.fs)
    assert rows.num_rows == 3


def test_stage_pages_round_trip_losslessly(tmp_path):
    import pyarrow.parquet as pq

    from pipeline.discover import discover
    from pipeline.rasterize import RasterSettings, rasterize
    from pipeline.stage import decode_image, write_stage

    d = tmp_path / "in"
    d.mkdir()
    write_pdf(d / "a.pdf", pages=2)
    settings = RasterSettings(dpi=72, max_pixels=50176)
    rep = write_stage([str(d)], tmp_path / "stage", settings, workers=1, timeout_s=30)
    assert (rep.documents, rep.pages) == (1, 2)
    [part] = (tmp_path / "stage" / "pages").glob("*.parquet")
    rows = pq.read_table(part).to_pylist()
    [doc] = discover([str(d)]).documents
    original = rasterize(doc, settings).pages
    for row, page in zip(sorted(rows, key=lambda r: r["page_index"]), original):
        img = decode_image(row["image"], row["width"], row["height"], row["encoding"])
        assert img.tobytes() == page.image.tobytes()
