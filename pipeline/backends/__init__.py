"""Execution backends beyond one machine.

* :func:`run_ray` (``pipeline.backends.ray_backend``): rasterize with Ray Data tasks across a
  Ray cluster and generate with a pool of Ray actors (one engine each); validation, Parquet
  parts, resume and reconcile are the local ``pipeline.runner.Runner``'s, unchanged.

Ray itself is imported only when a Ray backend runs.
"""

from __future__ import annotations

from pipeline.backends.ray_backend import RayEngine, run_ray

__all__ = ["RayEngine", "run_ray"]
