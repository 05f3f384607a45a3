"""The errors of ``docextract eval``."""


class EvalError(ValueError):
    """The evaluation cannot run (no truth, unknown or ambiguous schema, missing results directory)."""
