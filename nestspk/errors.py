"""Exceptions raised by nestspk. All derive from :class:`NestspkError`."""


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
