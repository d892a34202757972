"""Exception types raised by nngk_lab.

Every error the package raises on bad input is one of these, with a message that names
the file or flag involved, so the command line can print it as one plain sentence and
a notebook shows the same sentence.
"""


class NNGKError(Exception):
    """Base class of every error nngk_lab raises on purpose."""


class DataError(NNGKError):
    """A data folder or image is missing, empty or malformed."""


class ConfigError(NNGKError):
    """A setting (flag or argument) has a value that cannot work."""


class CheckpointError(NNGKError):
    """A checkpoint is missing, truncated, or from another model, dataset or version."""


class NonFiniteLossError(NNGKError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""
