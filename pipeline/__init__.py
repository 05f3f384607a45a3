"""docextract: batch extraction of invoices and receipts into typed Parquet through offline vLLM.

Python API::

    from pipeline import load_config, run_job
    summary = run_job(["invoices/"], "out/", load_config("configs/invoice.toml"))

A run, stage by stage, in data-flow order (``pipeline/runner.py`` strings them together; its docstring
names the object that runs each stage):

1. discover (``sources``, ``discover``, ``sniff``, ``input_lists``): inputs -> Documents, id = SHA-256 of the bytes;
2. skip (``output``, ``lease``): documents the output already holds under the run key;
3. rasterize (``sources``, ``feed``, ``workers``, ``pageblock``, ``rasterize``): pages on the 28-px grid, in
   worker processes, through a bounded queue;
4. prompt (``batching``, ``prompts``, ``fit``): one chat request per document, batched;
5. infer (``extract``, ``engines/``): vLLM, fed continuously; retries in ``engines/resilient``;
6. validate (``extract``, ``validate``): Pydantic + business rules, re-asks;
7. write (``rows``, ``columns``, ``store``, ``output``, ``manifest``): atomic Parquet parts, run.json.

Where the work runs (local worker pool, stage directory, Ray) is chosen in ``backends``. Around the
stages: ``records`` (what flows between them), ``config`` (+ ``config_load``), ``errors``, ``fs``, ``cli``.
"""

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: keep `import pipeline` cheap for worker processes
    if name in ("run_job", "Runner", "RunSummary", "CouldNotStart"):
        from pipeline import runner

        return getattr(runner, name)
    if name == "status":
        from pipeline.status import status

        return status
    if name in ("load_config", "JobConfig", "ConfigError"):
        from pipeline import config

        return getattr(config, name)
    raise AttributeError(name)
