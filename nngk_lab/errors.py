"""Exception types raised by nngk_lab.

Every error the package raises on bad input is one of these, with a message that names
the file or flag involved, so the command line can print it as one plain sentence and
a notebook shows the same sentence.
"""


class NNGKError(Exception):
    """Base class of every error nngk_lab raises on purpose."""

    def __init__(self, message: str = ""):
        super().__init__(_unwrap_worker_message(type(self), message))


def _unwrap_worker_message(cls: type, message) -> str:
    """An error raised in a DataLoader worker is re-raised by torch in the main process as
    ``cls("Caught ... Original Traceback ...")``; keep only the original sentence."""
    if not (isinstance(message, str) and message.startswith("Caught ") and "Original Traceback" in message):
        return message
    marker = f"{cls.__module__}.{cls.__qualname__}: "
    _, found, original = message.rpartition(marker)
    return original.strip() if found else message


class DataError(NNGKError):
    """A data folder or image is missing, empty or malformed."""


class ConfigError(NNGKError):
    """A setting (flag or argument) has a value that cannot work."""


class CheckpointError(NNGKError):
    """A checkpoint cannot be read or written, or is from another model, dataset or version."""


class ResourceError(NNGKError):
    """The machine ran out of memory for this run; the last good checkpoint is kept."""


class DistributedError(NNGKError):
    """A process of a distributed run could not join the others, or lost one of them."""


class NonFiniteLossError(NNGKError):
    """Training produced a NaN or infinite loss or weights; the last good checkpoint is kept."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name if it has none), for
    one-sentence errors that quote a library's reason."""
    return (str(error).splitlines() or [type(error).__name__])[0][:limit]
