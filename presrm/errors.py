"""Exception types a user can act on. The CLI turns each into one message and exit code 2."""

from __future__ import annotations


class PresrmError(Exception):
    """Base class: something the user can fix (a path, a key, an install)."""


class ConfigError(PresrmError, ValueError):
    """A recipe or override is invalid; the message names the key (and file)."""


class DataError(PresrmError, ValueError):
    """A data file or dataset is unusable; the message names the file and line."""


class ModelLoadError(PresrmError):
    """A model could not be found or loaded; the message says what to install or pass."""


class RunStateError(PresrmError):
    """A run directory is inconsistent with the requested run (e.g. another config)."""


class WriteError(PresrmError, OSError):
    """An output file or folder could not be written (full disk, permissions); the message names the path."""


class HubError(PresrmError):
    """The Hugging Face hub cannot take an upload (offline, no token, refused); the message says what to do."""


class RankLostError(PresrmError):
    """Another process of an ``accelerate launch`` run ended (killed, crashed, out of memory) during a stage; the
    message names its rank where it can be known, and the stage. Every stage's output is written atomically, so
    ``--resume`` continues the run (:func:`presrm.dist.rank_lost`)."""
