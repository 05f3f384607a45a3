"""pipeline/config.py: sections with bounds, the layers (defaults, file, DOCEXTRACT_* variables, --set, flags) and their errors."""

import pytest
from pydantic import BaseModel

from pipeline.config import ConfigError, load_config, resolve_config
from tests.helpers import toml_file


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'engine.max_num_seq'"):
        load_config(None, {"engine.max_num_seq": 4})
    with pytest.raises(ConfigError, match="'rasterize.dpi'"):
        load_config(None, {"rasterize.dpi": 5})
    p = tmp_path / "c.toml"
    p.write_text('schema = "receipt"\n[engine]\nmodel = "/m"\nprofile = "cpu"\n[run]\nbatch_size = 3\n')
    c = load_config(p, {"run.batch_size": 7})
    assert (c.schema_name, c.engine.model, c.engine.profile, c.run.batch_size) == ("receipt", "/m", "cpu", 7)
    p.write_text("[engine\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="min_pixels"):
        load_config(None, {"rasterize.min_pixels": 10000, "rasterize.max_pixels": 5000})


def test_example_configs_are_valid():
    from pathlib import Path

    files = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))
    assert files
    for f in files:
        load_config(f)


# ----------------------------------------------------------------------------- issue 17: numeric bounds


def _numeric_keys():
    """Every numeric key of the job config, as (dotted key, is_float), found from the models themselves
    so that a key added later is checked too."""
    import typing

    from pipeline.config import JobConfig

    out = []
    for section, sf in JobConfig.model_fields.items():
        model = sf.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name, f in model.model_fields.items():
            kinds = set(typing.get_args(f.annotation)) or {f.annotation}
            if bool in kinds:
                continue
            if kinds & {int, float}:
                out.append((f"{section}.{name}", float in kinds))
    return out


NUMERIC_KEYS = _numeric_keys()


def test_every_numeric_key_is_found():
    keys = dict(NUMERIC_KEYS)
    assert {"rasterize.timeout_s", "run.lease_ttl_s", "engine.max_model_len", "ray.gpus_per_actor"} <= set(keys)
    assert len(keys) >= 34


@pytest.mark.parametrize("key,is_float", NUMERIC_KEYS, ids=[k for k, _ in NUMERIC_KEYS])
def test_numeric_keys_refuse_infinite_nan_and_absurd_values(key, is_float):
    """inf, 1e10 and friends used to pass, then end the run with an OverflowError (exit 1, run.json
    left saying "running").  Each is refused at load, and the error names the key."""
    bad = [10**30, -(10**30)] + ([float("inf"), float("-inf"), float("nan"), 1e300] if is_float else [])
    for value in bad:
        with pytest.raises(ConfigError, match=f"'{key}'"):
            load_config(None, {key: value})


def test_infinite_timeout_in_toml_is_a_config_error(tmp_path):
    p = tmp_path / "c.toml"
    for text in ("[rasterize]\ntimeout_s = inf\n", "[rasterize]\ntimeout_s = 1e10\n", "[run]\nlease_ttl_s = nan\n"):
        p.write_text(text)
        with pytest.raises(ConfigError, match=r"'(rasterize\.timeout_s|run\.lease_ttl_s)'"):
            load_config(p)


@pytest.mark.parametrize(
    "key,value",
    [
        ("rasterize.timeout_s", 86400.0),
        ("rasterize.max_pixels", 16384 * 28 * 28),
        ("rasterize.max_source_pixels", 2**32),
        ("engine.max_model_len", 131072),
        ("engine.seed", 2**32 - 1),
        ("sampling.seed", 2**32 - 1),
        ("run.max_failure_rate", 0.0),
        ("run.engine_restarts", 0),
        ("ray.gpus_per_actor", 8),
    ],
)
def test_bounds_leave_real_settings_alone(key, value):
    load_config(None, {key: value})


def test_rates_and_counts_have_their_ranges():
    for key, value in [
        ("run.max_failure_rate", 1.5),
        ("run.max_failure_rate", -0.1),
        ("engine.gpu_memory_utilization", 1.01),
        ("sampling.top_p", 0),
        ("run.batch_size", 0),
        ("run.max_attempts", 0),
        ("rasterize.max_pages", 0),
        ("engine.seed", -1),
        ("engine.seed", 2**32),
        ("engine.mm_max_pixels", 100),
    ]:
        with pytest.raises(ConfigError, match=f"'{key}'"):
            load_config(None, {key: value})


def test_discover_follow_symlinks_option():
    assert load_config(None).discover.follow_symlinks == "within_roots"
    for v in ("all", "none", "within_roots"):
        assert load_config(None, {"discover.follow_symlinks": v}).discover.follow_symlinks == v
    with pytest.raises(ConfigError, match="'discover.follow_symlinks'"):
        load_config(None, {"discover.follow_symlinks": "yes"})


def test_precedence_defaults_file_env_set_flags(tmp_path):
    path = toml_file(tmp_path, "[run]\nbatch_size = 3\nmax_attempts = 4\n[sampling]\nmax_tokens = 99\n")
    env = {"DOCEXTRACT_RUN__BATCH_SIZE": "64", "DOCEXTRACT_RUN__MAX_ATTEMPTS": "5", "DOCEXTRACT_SCHEMA": "receipt"}
    sets = ["run.batch_size=100", "engine.extra={enforce_eager = true}", "prompt.system=Be brief."]
    cfg, sources = resolve_config(path, {"run.batch_size": 7, "engine.model": None}, sets=sets, environ=env)
    assert cfg.run.batch_size == 7 and sources["run.batch_size"] == "command line"
    assert cfg.run.max_attempts == 5 and sources["run.max_attempts"] == "env DOCEXTRACT_RUN__MAX_ATTEMPTS"
    assert cfg.sampling.max_tokens == 99 and sources["sampling.max_tokens"] == f"file {path}"
    assert cfg.schema_name == "receipt" and cfg.engine.extra == {"enforce_eager": True}
    assert cfg.prompt.system == "Be brief." and "rasterize.dpi" not in sources  # a default
    assert load_config(path).run.batch_size == 3  # the environment only when asked for


@pytest.mark.parametrize(
    "raw, key, value",
    [
        ("64", "run.batch_size", 64),
        ("0.2", "run.max_failure_rate", 0.2),
        ("false", "run.rehash", False),
        ("123", "engine.model", "123"),  # a text field keeps the text
        ('"quoted text"', "prompt.system", "quoted text"),
        ("receipt", "schema", "receipt"),
        ("{a = 1, b = [1, 2]}", "engine.extra", {"a": 1, "b": [1, 2]}),
    ],
)
def test_values_from_text_parse_as_toml_or_stay_text(raw, key, value):
    cfg = load_config(sets=[f"{key}={raw}"])
    got = cfg.model_dump(by_alias=True)
    for part in key.split("."):
        got = got[part]
    assert got == value


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DOCEXTRACT_RUN__BATCH_SIZE": "lots"}, "'run.batch_size': Input should be a valid integer"),
        (
            {"DOCEXTRACT_RUN__BATCH_SIZ": "8"},
            "DOCEXTRACT_RUN__BATCH_SIZ: no config key 'run.batch_siz' (did you mean 'run.batch_size'?)",
        ),
        (
            {"DOCEXTRACT_RUN_BATCH_SIZE": "8"},
            "DOCEXTRACT_RUN_BATCH_SIZE: sections and keys are separated by two underscores "
            "(did you mean DOCEXTRACT_RUN__BATCH_SIZE?)",
        ),
        (
            {"DOCEXTRACT_SCHEME": "receipt"},
            "DOCEXTRACT_SCHEME: no top-level config key 'scheme' (did you mean DOCEXTRACT_SCHEMA?)",
        ),
    ],
)
def test_bad_or_misspelt_variables_are_errors_naming_them(env, message):
    with pytest.raises(ConfigError) as e:
        load_config(environ=env)
    assert message in str(e.value) and next(iter(env)) in str(e.value)


def test_documented_non_config_variables_are_ignored():
    env = {"DOCEXTRACT_VENV_CACHE": "/cache", "DOCEXTRACT_TRUTH_DIR": "/truth", "DOCEXTRACT_SOMETHING_ELSE": "x"}
    assert load_config(environ=env) == load_config()


def test_set_errors():
    with pytest.raises(ConfigError, match="--set expects key=value"):
        load_config(sets=["run.batch_size"])
    with pytest.raises(ConfigError) as e:
        load_config(sets=["engine.modle=x"])
    assert str(e.value) == "unknown key 'engine.modle' (from --set engine.modle=x) (did you mean 'engine.model'?)"
