"""Every exception docextract raises on purpose, under one base class.

``DocextractError`` is what a caller (the CLI, an orchestrator) catches to tell "docextract
refused or could not do this, and says why" from a bug.  Each class also keeps the builtin
base it always had (``ValueError`` for bad input, ``RuntimeError`` for engine trouble), so
code written against those still works.

Which ones end a run:

* ``CouldNotStart``: bad config, no inputs, an engine that would not load, an output that
  cannot be read or locked.  Exit code 2, nothing written.
* ``EngineUnavailable``: the engine died and could not be rebuilt.  Exit code 5, the rest
  stays pending.
* ``OutputUnwritable`` (and ``OutputLost``, the output directory vanished): a part or run.json
  could not be written mid-run.  Exit code 6, the documents not committed stay pending.

The others are raised inside one stage and turned into a failure row or a ``CouldNotStart``
by the stage that calls them; they never reach the user as a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.records import ErrorType


class DocextractError(Exception):
    """Base of every exception docextract raises on purpose; the message says what to do."""


class CouldNotStart(DocextractError, RuntimeError):
    """The run cannot start: bad config, no inputs, engine or model would not load (exit code 2)."""


class ConfigError(DocextractError, ValueError):
    """A config file, flag or value is wrong; the message names the key."""


class InputError(DocextractError, ValueError):
    """An input spec (path, glob, manifest) cannot be expanded."""


class PluginError(DocextractError, ValueError):
    """A ``package.module:attr`` spec does not name an importable attribute."""


class SchemaNotFound(DocextractError, ValueError):
    """A schema name is neither a registry name nor an importable Pydantic model."""


class SchemaMappingError(DocextractError, TypeError):
    """A schema field has no Parquet column type."""


class StageError(DocextractError, ValueError):
    """A stage directory is missing, inconsistent or made with other settings."""


class DamagedPart(DocextractError, ValueError):
    """An output part that is not readable Parquet of ours (it is quarantined)."""


class LeaseHeld(DocextractError, RuntimeError):
    """Another run holds the object-store output's lease."""


class EngineLoadError(DocextractError, RuntimeError):
    """The engine could not be created; the message says what to install or pass."""


class EngineDead(DocextractError, RuntimeError):
    """Raised by an engine whose process or device is gone (a rebuild is needed)."""


class EngineUnavailable(DocextractError, RuntimeError):
    """The engine died and could not be rebuilt within the budget: the run stops, the remaining
    documents stay pending (failure rows for them would make later runs skip them)."""


class OutputUnwritable(DocextractError, OSError):
    """A part or the manifest could not be written (disk full, permissions, the store refused): the
    run stops with what it committed (exit code 6); the rest stays pending."""


class OutputLost(OutputUnwritable):
    """The output directory (or one of its tables) disappeared during the run, with its parts: the run
    stops instead of writing the rest into a fresh, half-empty one (exit code 6)."""


class RasterError(DocextractError):
    """One document could not be rasterized; becomes its failure row (``error_type``)."""

    def __init__(self, error_type: ErrorType, message: str):
        super().__init__(message)
        self.error_type = error_type
        self.message = message

    def __reduce__(self) -> tuple[type[RasterError], tuple[ErrorType, str]]:  # crosses processes intact
        return type(self), (self.error_type, self.message)


class OcrError(DocextractError, RuntimeError):
    """The OCR engine could not read a page (or is not installed): that page gets no words and a warning."""
