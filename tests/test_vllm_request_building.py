"""What the vllm engine builds, checked against the installed vLLM package (no model needed)."""

import json

import pytest
from PIL import Image

from pipeline.config import ConfigError, load_config
from pipeline.engines.context import model_context
from pipeline.engines.vllm import (
    cpu_environment,
    llm_kwargs,
    resolve_settings,
    sampling_params,
    to_vllm_messages,
)
from pipeline.prompts import build_request, json_schema_for
from pipeline.records import Page, Sampling
from schemas import Invoice


def test_llm_kwargs_follow_config_and_profiles():
    job = load_config(
        None, {"rasterize.max_pages": 5, "rasterize.max_pixels": 28 * 28 * 100, "engine.profile": "gpu"}
    )
    k = llm_kwargs(job.engine_config())
    assert k["model"] == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert k["limit_mm_per_prompt"] == {"image": 5, "video": 0}
    assert k["mm_processor_kwargs"] == {"min_pixels": 3136, "max_pixels": 28 * 28 * 100}
    assert k["enforce_eager"] is False and k["gpu_memory_utilization"] == 0.9
    assert k["structured_outputs_config"] == {"backend": "xgrammar", "disable_any_whitespace": True}
    assert k["enable_prefix_caching"] is True and "max_model_len" not in k  # unset: resolve_settings decides
    assert llm_kwargs(load_config(None, {"engine.profile": "gpu", "engine.max_model_len": 8192}).engine).get(
        "max_model_len"
    ) == 8192
    with pytest.raises(ValueError, match="not resolved"):
        llm_kwargs(load_config(None).engine_config())  # profile auto must be resolved first
    cpu = load_config(
        None,
        {"engine.profile": "cpu", "engine.quantization": "fp8", "engine.max_num_seqs": 16, "engine.extra": {"swap_space": 0}},
    ).engine_config()
    k = llm_kwargs(cpu)
    assert k["enforce_eager"] is True and k["gpu_memory_utilization"] == 0.5
    assert (k["quantization"], k["max_num_seqs"], k["swap_space"]) == ("fp8", 16, 0)
    assert cpu_environment(cpu) == {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def test_llm_kwargs_are_accepted_by_vllm_engine_args():
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    fields = {f.name for f in dataclasses.fields(EngineArgs)}
    resolved, _ = resolve_settings(load_config(None, {"engine.max_num_seqs": 8}).engine_config())
    k = llm_kwargs(resolved)
    assert set(k) - {"model"} <= fields, set(k) - fields


def test_auto_profile_is_cpu_on_vllms_cpu_build():
    from vllm.platforms import current_platform

    assert current_platform.is_cpu()  # this machine: vLLM's CPU build
    assert load_config(None).engine.profile == "auto"
    resolved, settings = resolve_settings(load_config(None).engine_config())
    assert resolved.profile == "cpu"
    assert (settings["profile"], settings["profile_source"]) == ("cpu", "auto: vLLM platform is cpu")
    k = llm_kwargs(resolved)
    assert k["enforce_eager"] is True and k["gpu_memory_utilization"] == 0.5
    _, settings = resolve_settings(load_config(None, {"engine.profile": "gpu"}).engine_config())
    assert (settings["profile"], settings["profile_source"]) == ("gpu", "engine.profile")  # asked for: kept
    with pytest.raises(ConfigError, match="engine.profile"):
        load_config(None, {"engine.profile": "tpu"})


def _checkpoint(path, config, tokenizer_config=None):
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    if tokenizer_config is not None:
        (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return str(path)


def test_max_model_len_defaults_to_the_models_own_context_when_shorter(tmp_path):
    short = _checkpoint(tmp_path / "short", {"text_config": {"max_position_embeddings": 2048}})
    resolved, s = resolve_settings(load_config(None, {"engine.model": short}).engine_config())
    assert resolved.max_model_len == 2048
    assert s["max_model_len"] == 2048
    assert s["max_model_len_source"] == "model config (text_config.max_position_embeddings)"
    # an older Qwen2.5-VL config.json keeps the text model's keys at the top
    flat = _checkpoint(tmp_path / "flat", {"max_position_embeddings": 128000}, {"model_max_length": 131072})
    _, s = resolve_settings(load_config(None, {"engine.model": flat}).engine_config())
    assert s["max_model_len"] == 16384
    assert s["max_model_len_source"] == "default 16384 (the model allows 128,000, max_position_embeddings)"
    tok = _checkpoint(tmp_path / "tok", {"text_config": {"max_position_embeddings": 32768}}, {"model_max_length": 4096})
    _, s = resolve_settings(load_config(None, {"engine.model": tok}).engine_config())
    assert (s["max_model_len"], s["max_model_len_source"]) == (4096, "model config (tokenizer_config.model_max_length)")
    # an explicit value is passed unchanged, even a larger one (vLLM then says why it cannot)
    resolved, s = resolve_settings(load_config(None, {"engine.model": short, "engine.max_model_len": 8192}).engine)
    assert (resolved.max_model_len, s["max_model_len_source"]) == (8192, "engine.max_model_len")


def test_max_model_len_is_left_to_vllm_when_the_config_is_not_readable(tmp_path):
    resolved, s = resolve_settings(load_config(None, {"engine.model": "someorg/not-cached-model"}).engine_config())
    assert resolved.max_model_len is None and s["max_model_len"] is None
    assert s["max_model_len_source"] == "vLLM's own: the model's config.json was not readable here"
    assert "max_model_len" not in llm_kwargs(resolved)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    assert model_context(str(broken)) is None


def test_sampling_params_carry_the_json_schema():
    from vllm import SamplingParams

    pages = [Page("d", 0, Image.new("RGB", (56, 56)), 56, 56)]
    schema = json_schema_for(Invoice)
    req = build_request("d", pages, Invoice, schema, Sampling(temperature=0.2, max_tokens=99, seed=7))
    sp = sampling_params(req)
    assert isinstance(sp, SamplingParams)
    assert sp.structured_outputs.json == schema
    assert (sp.temperature, sp.max_tokens, sp.seed) == (0.2, 99, 7)
    msgs = to_vllm_messages(req)
    parts = msgs[1]["content"]
    assert parts[0]["type"] == "image_pil" and parts[0]["image_pil"] is pages[0].image
    assert msgs[0]["role"] == "system" and isinstance(msgs[0]["content"], str)


def test_vllm_chat_parser_accepts_our_image_parts():
    """vLLM's own chat-content parser knows the part type we send."""
    import vllm.renderers.chat_utils as cu

    src = open(cu.__file__).read()
    assert '"image_pil"' in src


def test_builtin_schemas_are_supported_by_xgrammar():
    """vLLM refuses (per request) a JSON Schema with features xgrammar lacks; ours must pass its check."""
    from vllm.v1.structured_output.backend_xgrammar import has_xgrammar_unsupported_json_features

    from schemas import REGISTRY

    for name, model in REGISTRY.items():
        assert not has_xgrammar_unsupported_json_features(json_schema_for(model)), name


def test_missing_vllm_says_what_to_install(monkeypatch):
    import sys

    from pipeline.engines.base import EngineLoadError
    from pipeline.engines.vllm import VLLMEngine

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(EngineLoadError, match=r"pip install 'docextract\[vllm\]'.*scripts/setup"):
        VLLMEngine(load_config(None).engine_config())


def test_unreachable_weights_say_what_to_pass(tmp_path):
    from tests.helpers import run_cli, write_pdf

    write_pdf(tmp_path / "a.pdf")
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = run_cli("run", tmp_path / "a.pdf", "--out", tmp_path / "o", "--model", "someorg/not-cached-model", "--profile", "cpu", env=env)
    assert r.returncode == 2
    assert "not in the Hugging Face cache" in r.stderr and "--model /path/to/local/checkpoint" in r.stderr
