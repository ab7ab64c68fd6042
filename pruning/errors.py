"""Errors a user can act on. Standard library only, so every package (reports too) may import it.

Each carries one line that names the problem; the CLI prints it and exits non-zero.
"""


class PrunebenchError(Exception):
    """Base of every error that is the user's to fix (bad config, missing model, ...)."""


class ConfigError(PrunebenchError, ValueError):
    """An experiment config that does not validate."""


class ModelSourceError(PrunebenchError):
    """A model source that cannot be resolved to a checkpoint on this machine."""


class CheckpointError(PrunebenchError):
    """A checkpoint directory that exists but cannot be read (corrupt or incomplete)."""


class AdapterError(PrunebenchError):
    """A model whose architecture family has no adapter, or whose layout the adapter does not match."""


class SuiteError(PrunebenchError):
    """An evaluation suite that cannot be built or run (unknown name, bad data, wrong modality)."""


class StoreError(PrunebenchError):
    """The results database cannot be opened or written (locked, corrupt, wrong schema)."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message, for a one-line report; its type's name when it has no message."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
