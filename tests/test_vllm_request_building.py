"""What the vllm engine builds, checked against the installed vLLM package (no model needed)."""

from PIL import Image

from pipeline.config import load_config
from pipeline.engines.vllm import cpu_environment, llm_kwargs, sampling_params, to_vllm_messages
from pipeline.prompts import build_request, json_schema_for
from pipeline.records import Page, Sampling
from schemas import Invoice


def test_llm_kwargs_follow_config_and_profiles():
    job = load_config(None, {"rasterize.max_pages": 5, "rasterize.max_pixels": 28 * 28 * 100})
    k = llm_kwargs(job.engine_config())
    assert k["model"] == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert k["limit_mm_per_prompt"] == {"image": 5, "video": 0}
    assert k["mm_processor_kwargs"] == {"min_pixels": 3136, "max_pixels": 28 * 28 * 100}
    assert k["enforce_eager"] is False and k["gpu_memory_utilization"] == 0.9
    assert k["structured_outputs_config"] == {"backend": "xgrammar", "disable_any_whitespace": True}
    assert k["enable_prefix_caching"] is True and k["max_model_len"] == 16384
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
    k = llm_kwargs(load_config(None, {"engine.max_num_seqs": 8}).engine_config())
    assert set(k) - {"model"} <= fields, set(k) - fields


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

    import pytest

    from pipeline.engines.base import EngineLoadError
    from pipeline.engines.vllm import VLLMEngine

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(EngineLoadError, match=r"pip install 'docextract\[vllm\]'.*scripts/setup"):
        VLLMEngine(load_config(None).engine_config())


def test_unreachable_weights_say_what_to_pass(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import REPO, write_pdf

    write_pdf(tmp_path / "a.pdf")
    exe = Path(sys.executable).parent / "docextract"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run(
        [str(exe), "run", str(tmp_path / "a.pdf"), "--out", str(tmp_path / "o"), "--model", "someorg/not-cached-model", "--profile", "cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )
    assert r.returncode == 2
    assert "not in the Hugging Face cache" in r.stderr and "--model /path/to/local/checkpoint" in r.stderr
