"""The errors of ``docextract eval``."""


class EvalError(ValueError):
    """The evaluation cannot run (no truth, unknown or ambiguous schema, missing results directory)."""


class ReportFormatError(EvalError):
    """A report path whose extension names no report format this package writes."""
