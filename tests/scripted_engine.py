"""A scripted engine: a TEST DOUBLE for the stages around the model, never a default.

It answers from a mapping ``doc_id -> answer`` or a callback ``Request -> answer``.
An answer is a JSON-able dict (serialised), a string (returned as is), or a
``Generation`` (returned as is, e.g. to simulate truncation).

``from_truth`` is a factory for ``--engine tests.scripted_engine:from_truth``: it
answers every document with the ground truth written next to it
(``<stem>.truth.json``), found under ``engine.options.truth_dir`` or
``$DOCEXTRACT_TRUTH_DIR`` (default ``data/samples``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.records import Generation, Request

Answer = dict | str | Generation


class ScriptedEngine:
    name = "scripted"

    def __init__(
        self,
        answers: dict[str, Answer] | None = None,
        callback: Callable[[Request], Answer] | None = None,
        record: bool = True,
    ):
        self.answers = answers or {}
        self.callback = callback
        self.record = record  # keep every request (with its page images) for tests to inspect
        self.batches: list[list[Request]] = []
        self.batch_sizes: list[int] = []
        self.closed = False

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        self.batch_sizes.append(len(requests))
        if self.record:
            self.batches.append(list(requests))
        out = []
        for r in requests:
            if self.callback is not None:
                ans = self.callback(r)
            elif r.doc_id in self.answers:
                ans = self.answers[r.doc_id]
            else:
                ans = "{}"
            if isinstance(ans, Generation):
                out.append(ans)
                continue
            text = ans if isinstance(ans, str) else json.dumps(ans, ensure_ascii=False)
            out.append(
                Generation(r.doc_id, text, "stop", prompt_tokens=100 + 50 * len(r.images), output_tokens=len(text) // 3)
            )
        return out

    def close(self) -> None:
        self.closed = True


def truth_answers(truth_dir: str | os.PathLike) -> dict[str, dict]:
    """doc_id (sha256 of the document's bytes) -> ground-truth dict, for every ``*.truth.json``."""
    answers = {}
    for tf in Path(truth_dir).rglob("*.truth.json"):
        stem = tf.name[: -len(".truth.json")]
        for doc in tf.parent.iterdir():
            if doc.name.startswith(stem + ".") and not doc.name.endswith(".truth.json"):
                doc_id = hashlib.sha256(doc.read_bytes()).hexdigest()
                data = json.loads(tf.read_text(encoding="utf-8"))
                answers[doc_id] = data.get("truth", data)
    return answers


def from_truth(config: Any = None) -> ScriptedEngine:
    options = getattr(config, "options", {}) or {}
    truth_dir = options.get("truth_dir") or os.environ.get("DOCEXTRACT_TRUTH_DIR") or "data/samples"
    return ScriptedEngine(truth_answers(truth_dir), record=False)  # from the CLI, on inputs of any size


def perturbed(config: Any = None) -> ScriptedEngine:
    """Ground truth with known damage: ``invoice_number`` / ``merchant`` gets a suffix on documents
    whose doc_id starts with a digit 0-7 (about half), nothing else changes."""
    base = from_truth(config)

    def answer(req):
        t = json.loads(json.dumps(base.answers.get(req.doc_id, {})))
        if req.doc_id[0] in "01234567":
            for key in ("invoice_number", "merchant"):
                if key in t:
                    t[key] = f"{t[key]}-X"
        return t

    return ScriptedEngine(callback=answer, record=False)


class PrefetchingEngine(ScriptedEngine):
    """A scripted engine that also takes ``prefetch`` (as ``VLLMEngine`` does) and counts, per request
    uid, what arrived early: to test that the next batch reaches the engine once, ahead of time."""

    def __init__(self, answers: dict[str, Answer] | None = None):
        super().__init__(answers, record=False)
        self.prefetched: set[str] = set()
        self.generated = 0
        self.generated_after_prefetch = 0

    def prefetch(self, requests: Sequence[Request]) -> None:
        self.prefetched.update(r.uid for r in requests)

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        self.generated += len(requests)
        self.generated_after_prefetch += sum(r.uid in self.prefetched for r in requests)
        return super().generate(requests)

    def counters(self) -> dict[str, int]:
        return {
            "prefetched": len(self.prefetched),
            "generated": self.generated,
            "generated_after_prefetch": self.generated_after_prefetch,
        }


def prefetching(config: Any = None) -> PrefetchingEngine:
    """``from_truth`` with prefetch: ``--engine tests.scripted_engine:prefetching``."""
    return PrefetchingEngine(from_truth(config).answers)
