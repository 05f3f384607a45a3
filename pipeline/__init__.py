"""docextract: batch extraction of invoices and receipts into typed Parquet through offline vLLM.

Python API::

    from pipeline import load_config, run_job
    summary = run_job(["invoices/"], "out/", load_config("configs/invoice.toml"))
"""

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: keep `import pipeline` cheap for worker processes
    if name in ("run_job", "Runner", "RunSummary", "CouldNotStart"):
        from pipeline import runner

        return getattr(runner, name)
    if name in ("load_config", "JobConfig", "ConfigError"):
        from pipeline import config

        return getattr(config, name)
    raise AttributeError(name)
