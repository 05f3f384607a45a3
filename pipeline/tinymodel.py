"""Build a tiny, randomly initialised Qwen2.5-VL checkpoint for offline tests.

The real models cannot be downloaded on the test machines, yet the tests must
drive the real vLLM engine (CPU build) through ``vllm.LLM.chat`` with images
and JSON-schema constrained decoding.  :func:`build_tiny_qwen25vl` writes a
complete Hugging Face style checkpoint directory that vLLM and
``transformers.AutoProcessor`` load like the real ``Qwen/Qwen2.5-VL-*-Instruct``
repositories:

* ``config.json`` -- ``Qwen2_5_VLConfig`` with 2 text layers (hidden 128,
  head dim 64, M-RoPE section ``[8, 12, 12]``) and a 2-block vision tower
  (hidden 128, patch 14, spatial merge 2, window 112).
* ``model.safetensors`` -- float32 random weights drawn from a fixed seed.
* ``tokenizer.json`` -- byte-level BPE trained with ``tokenizers`` on a small
  built-in corpus (JSON punctuation, digits, English/German/French, some CJK)
  followed by Qwen's special tokens, so ``<|im_start|>`` etc. are single ids.
* ``tokenizer_config.json`` (with a Qwen-style ``chat_template``),
  ``chat_template.jinja``, ``special_tokens_map.json``,
  ``generation_config.json``.
* ``preprocessor_config.json`` / ``video_preprocessor_config.json`` /
  ``processor_config.json`` -- ``Qwen2VLImageProcessor`` limited to
  56*56..112*112 pixels, i.e. 4..16 image tokens per image.

Heavy libraries (torch, transformers, tokenizers, safetensors) are imported
inside the function, so importing this module is cheap and side-effect free.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "CHAT_TEMPLATE",
    "IMAGE_MAX_PIXELS",
    "IMAGE_MIN_PIXELS",
    "SPECIAL_TOKENS",
    "build_tiny_qwen25vl",
]

#: Qwen2.5-VL special tokens, in Qwen's order (appended after the BPE vocab).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: Image pixel budget of the image processor (56*56 .. 112*112 pixels).
IMAGE_MIN_PIXELS: int = 56 * 56
IMAGE_MAX_PIXELS: int = 56 * 56 * 4

_PATCH_SIZE = 14
_MERGE_SIZE = 2
_TEMPORAL_PATCH_SIZE = 2
_BPE_VOCAB_SIZE = 2048
_VOCAB_MULTIPLE = 64
_INIT_STD = 0.02
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Same pre-tokenisation as transformers' Qwen2Tokenizer, so the tokenizer
# behaves identically whichever tokenizer class ends up loading it.
_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

#: Qwen-style chat template.  Each image part (``image``, ``image_url``,
#: ``image_pil``; vLLM hands the template ``{"type": "image"}``) becomes
#: ``<|vision_start|><|image_pad|><|vision_end|>``, text parts are inlined.
CHAT_TEMPLATE: str = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] in ['image', 'image_url', 'image_pil']"
    " or 'image' in content or 'image_url' in content or 'image_pil' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] in ['video', 'video_url'] or 'video' in content %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)

_CORPUS_LINES: tuple[str, ...] = (
    '{"vendor": "ACME GmbH", "invoice_number": "RE-2024-0042", "total": 1234.56}',
    '{"currency": "EUR", "date": "2024-03-15", "items": [{"description": "Widget", '
    '"quantity": 2, "unit_price": 9.99}], "tax_rate": 0.19, "paid": true, "note": null}',
    '[{"a": 1}, {"b": -2.5e3}, {"c": "x"}] {} [] : , " \\" \\n \\u00e9 true false null',
    "0 1 2 3 4 5 6 7 8 9 10 12.50 99.99 100 1000 2023 2024 2025 0.07 0.19 -1 +49 3.14",
    "Invoice number, date, due date, total amount, subtotal, tax, VAT, net, gross.",
    "Receipt from the store: coffee 3.50, sandwich 6.20, water 1.80, total 11.50 USD.",
    "The vendor name and address are printed at the top of the page.",
    "Please extract the fields as JSON. Return only valid JSON, no extra text.",
    "Rechnung Nummer, Rechnungsdatum, Gesamtbetrag, Mehrwertsteuer, Netto, Brutto, MwSt.",
    "Kassenbon: Brötchen 0,45 €, Kaffee 2,90 €, Summe 3,35 €, Straße, Größe, Übertrag.",
    "Vielen Dank für Ihren Einkauf! Zahlbar innerhalb von 14 Tagen ohne Abzug.",
    "Facture numéro, date d'émission, montant total TTC, HT, TVA, échéance, reçu.",
    "Reçu de caisse : café 2,50 €, pain 1,20 €, total à payer 3,70 €, merci à bientôt.",
    "Société Générale, rue de la Paix, Paris, français, élève, garçon, où, déjà.",
    "发票号码 开票日期 合计 金额 税额 价税合计 人民币 收据 商品 数量 单价 总计",
    "領収書 請求書 合計 金額 税込 消費税 日付 株式会社 東京都",
    "영수증 합계 금액 부가세 날짜",
    "system user assistant You are a helpful assistant. image text",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz !#$%&'()*+-./;<=>?@[]^_`{|}~",
)


def _corpus() -> list[str]:
    """Return the deterministic training corpus for the BPE tokenizer."""
    return [line for line in _CORPUS_LINES for _ in range(3)]


def _train_tokenizer() -> Any:
    """Train the byte-level BPE tokenizer and append Qwen's special tokens.

    Returns a ``tokenizers.Tokenizer`` whose special tokens occupy the last
    ``len(SPECIAL_TOKENS)`` ids, in :data:`SPECIAL_TOKENS` order.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def _token_ids(tok: Any) -> dict[str, int]:
    """Map every special token to its id, checking that none was split."""
    ids: dict[str, int] = {}
    for token in SPECIAL_TOKENS:
        idx = tok.token_to_id(token)
        if idx is None:  # pragma: no cover - defensive
            raise RuntimeError(f"special token {token!r} missing from the tokenizer")
        ids[token] = idx
    return ids


def _model_config(vocab_size: int, ids: dict[str, int], max_position_embeddings: int) -> Any:
    """Return the tiny ``Qwen2_5_VLConfig``."""
    from transformers import Qwen2_5_VLConfig

    text_hidden = 128
    text_heads = 2  # head_dim 64 (supported by vLLM's CPU attention backend)
    head_dim = text_hidden // text_heads
    mrope_section = [8, 12, 12]  # sums to head_dim // 2
    assert sum(mrope_section) == head_dim // 2
    text_config: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": text_hidden,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": text_heads,
        "num_key_value_heads": 1,
        "hidden_act": "silu",
        "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": 1e-6,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": 2,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1000000.0,
            "mrope_section": mrope_section,
        },
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
        "dtype": "float32",
    }
    vision_config: dict[str, Any] = {
        "depth": 2,
        "hidden_size": 128,
        "hidden_act": "silu",
        "intermediate_size": 256,
        "num_heads": 2,
        "in_channels": 3,
        "patch_size": _PATCH_SIZE,
        "spatial_merge_size": _MERGE_SIZE,
        "temporal_patch_size": _TEMPORAL_PATCH_SIZE,
        "tokens_per_second": 2,
        # window of 112 px = 4x4 merged tokens, the real models' setting
        "window_size": 112,
        "out_hidden_size": text_hidden,
        "fullatt_block_indexes": [1],
        "dtype": "float32",
    }
    top: dict[str, Any] = {  # passed as **kwargs: transformers' stubs do not list the token ids
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
        "dtype": "float32",
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    }
    return Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config, **top)


def _random_state_dict(config: Any, seed: int) -> dict[str, Any]:
    """Return float32 random weights for every tensor of the HF model.

    The model is instantiated on the ``meta`` device only to learn the tensor
    names and shapes (no memory, no RNG use).  Tensors are then drawn in
    sorted-name order from a private ``torch.Generator`` so the result only
    depends on ``seed`` and the shapes, not on transformers' init code or the
    global RNG.  Norm weights are ones, biases zeros, the rest ``N(0, 0.02)``.
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if name.endswith(".bias"):
            tensor = torch.zeros(shape, dtype=torch.float32)
        elif "norm" in name or name.endswith(".ln_q.weight"):
            tensor = torch.ones(shape, dtype=torch.float32)
        else:
            tensor = torch.randn(shape, generator=gen, dtype=torch.float32) * _INIT_STD
        out[name] = tensor.contiguous()
    return out


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def _write_tokenizer_files(out: Path, tok: Any, ids: dict[str, int], model_max_length: int) -> None:
    """Write ``tokenizer.json`` and the transformers tokenizer side files."""
    tok.save(str(out / "tokenizer.json"))
    added_tokens_decoder = {
        str(ids[t]): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in SPECIAL_TOKENS
    }
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "Qwen2Tokenizer",
            "add_bos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": added_tokens_decoder,
            "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")],
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "unk_token": None,
            "chat_template": CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "errors": "replace",
            "model_max_length": model_max_length,
            "split_special_tokens": False,
            "processor_class": "Qwen2_5_VLProcessor",
        },
    )
    _write_json(
        out / "special_tokens_map.json",
        {
            "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")],
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
        },
    )
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")


def _write_processor_files(out: Path) -> None:
    """Write image/video processor and processor configs."""
    image_cfg: dict[str, Any] = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "do_convert_rgb": True,
        "rescale_factor": 1 / 255,
        "resample": 3,
        "image_mean": _CLIP_MEAN,
        "image_std": _CLIP_STD,
        "min_pixels": IMAGE_MIN_PIXELS,
        "max_pixels": IMAGE_MAX_PIXELS,
        "size": {"shortest_edge": IMAGE_MIN_PIXELS, "longest_edge": IMAGE_MAX_PIXELS},
        "patch_size": _PATCH_SIZE,
        "merge_size": _MERGE_SIZE,
        "temporal_patch_size": _TEMPORAL_PATCH_SIZE,
    }
    _write_json(out / "preprocessor_config.json", image_cfg)
    video_cfg = dict(image_cfg)
    del video_cfg["image_processor_type"]
    video_cfg["video_processor_type"] = "Qwen2VLVideoProcessor"
    _write_json(out / "video_preprocessor_config.json", video_cfg)
    _write_json(out / "processor_config.json", {"processor_class": "Qwen2_5_VLProcessor"})


def build_tiny_qwen25vl(
    out_dir: str | Path, seed: int = 0, overwrite: bool = False, max_position_embeddings: int = 4096
) -> Path:
    """Write a tiny random Qwen2.5-VL checkpoint to ``out_dir`` and return it.

    Args:
        out_dir: Target directory.  Created if missing.
        seed: Seed for the random weights (the tokenizer does not depend on
            it).  The same seed gives byte-identical files.
        overwrite: If ``False`` and ``out_dir`` already holds a complete
            checkpoint built by this function with the same ``seed`` (recorded
            in ``tinymodel.json``), it is reused as is.  If ``True`` the
            directory is rebuilt.  A non-empty directory that is not such a
            checkpoint raises :class:`FileExistsError` unless ``overwrite``.
        max_position_embeddings: The model's context (``config.json`` and the
            tokenizer's ``model_max_length``); a short one makes a checkpoint
            whose context is below docextract's default ``max_model_len``.

    Returns:
        The checkpoint directory as an absolute :class:`~pathlib.Path`.

    The files are first written to a temporary sibling directory and then
    renamed into place, so a crash never leaves a half-written checkpoint and
    concurrent builders of the same checkpoint (e.g. pytest-xdist workers)
    end up sharing one complete copy.

    Load it in vLLM with ``dtype="float32"``: vLLM otherwise downcasts the
    float32 checkpoint to bfloat16, which is slower on AVX2-only CPUs.
    """
    out = Path(out_dir).expanduser().resolve()
    marker = out / "tinymodel.json"
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            if _is_complete(out, seed, max_position_embeddings):
                return out
            raise FileExistsError(
                f"{out} is not empty and is not a tiny Qwen2.5-VL checkpoint for seed {seed} "
                f"and context {max_position_embeddings}; "
                "pass overwrite=True to replace it"
            )
    out.parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_checkpoint(tmp, seed, max_position_embeddings, marker.name)
        if out.exists():
            if not overwrite and _is_complete(out, seed, max_position_embeddings):
                # Another process finished the same checkpoint meanwhile.
                shutil.rmtree(tmp, ignore_errors=True)
                return out
            shutil.rmtree(out, ignore_errors=True)
        try:
            os.replace(tmp, out)
        except OSError:
            # Another process won the race and put a checkpoint in place.
            if not _is_complete(out, seed, max_position_embeddings):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_checkpoint(tmp: Path, seed: int, max_position_embeddings: int, marker_name: str) -> None:
    """Every file of the checkpoint into ``tmp``: config, random weights, tokenizer, processor, marker."""
    from safetensors.torch import save_file

    tok = _train_tokenizer()
    ids = _token_ids(tok)
    tok_vocab = tok.get_vocab_size(with_added_tokens=True)
    vocab_size = -(-tok_vocab // _VOCAB_MULTIPLE) * _VOCAB_MULTIPLE
    config = _model_config(vocab_size, ids, max_position_embeddings)
    state = _random_state_dict(config, seed)

    config.save_pretrained(str(tmp))
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    _write_tokenizer_files(tmp, tok, ids, model_max_length=config.text_config.max_position_embeddings)
    _write_processor_files(tmp)
    _write_json(
        tmp / "generation_config.json",
        {
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
            "pad_token_id": ids["<|endoftext|>"],
        },
    )
    digest = hashlib.sha256((tmp / "model.safetensors").read_bytes()).hexdigest()
    _write_json(
        tmp / marker_name,
        {
            "builder": "pipeline.tinymodel.build_tiny_qwen25vl",
            "seed": seed,
            "max_position_embeddings": max_position_embeddings,
            "tokenizer_vocab_size": tok_vocab,
            "config_vocab_size": vocab_size,
            "special_token_ids": ids,
            "model_sha256": digest,
        },
    )
    tmp.chmod(0o755)
    for path in tmp.iterdir():
        path.chmod(0o644)


def _is_complete(out: Path, seed: int, max_position_embeddings: int) -> bool:
    """Whether ``out`` holds a finished checkpoint built by this module for ``seed`` and this context."""
    try:
        meta = json.loads((out / "tinymodel.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    required = (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
    )
    # a checkpoint written before the context was recorded has the default one
    context = meta.get("max_position_embeddings", 4096)
    files = all((out / name).is_file() for name in required)
    return meta.get("seed") == seed and context == max_position_embeddings and files
