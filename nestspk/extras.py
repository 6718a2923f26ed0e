"""Optional dependencies ("extras"): import them lazily, fail with the ``pip install`` line that fixes it."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import NestspkError

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(NestspkError, ImportError):
    """An optional package that a feature needs is not installed; the message names the extra to install."""


def require(module: str, extra: str, feature: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install 'nestspk[extra]'``.

    Args:
        module: the import name (``"faiss"``).
        extra: the nestspk extra that installs it (``"faiss"``).
        feature: what needs it, for the message (``"Gallery(index='faiss')"``).
        package: the PyPI name when it differs from ``module`` (``"faiss-cpu"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"{feature} needs the optional package {package or module!r}, which is not installed "
            f"({type(e).__name__}: {e}); install it with: pip install 'nestspk[{extra}]'") from e
