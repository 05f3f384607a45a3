"""Inference engines.  ``base`` defines the protocol; ``vllm`` is the only module importing vLLM."""

from pipeline.engines.base import Engine, EngineBase, load_engine

__all__ = ["Engine", "EngineBase", "load_engine"]
