"""Exceptions raised by nestspk. All derive from :class:`NestspkError`.

The promise: every failure a user can cause (a bad input, argument, file or list) raises a
:class:`NestspkError` subclass whose message names the offending input (its path, a short
label such as ``<array shape=(...) dtype=...>``, ``file:line`` for list files, and the item index
for batches); the ``nestspk`` command prints it as one line and exits with status 2.
"""


class NestspkError(Exception):
    """Base class for every error nestspk raises on purpose."""


class AudioError(NestspkError, ValueError):
    """Audio input that cannot be turned into a valid 16 kHz waveform.

    The message always names the offending input (path or ``<array ...>``).
    """


class WeightsError(NestspkError):
    """A weights file or model card that is missing, tampered with or incompatible."""


class GalleryError(NestspkError, ValueError):
    """A speaker gallery that is malformed or used inconsistently."""


class InputError(NestspkError, ValueError, TypeError):
    """A bad argument or list file: a non-integer ``batch_size``, a malformed trial line (``file:line``), ...

    Subclasses both ValueError and TypeError, so code that caught the built-in errors keeps working.
    """
