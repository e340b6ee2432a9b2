"""Optional features and the pip extras that bring their packages (`pip install 'nlpcli[serve]'`).

The base install carries what every verb needs; a feature whose package is missing stops with one line naming
the install command (exit 1 through the CLI), at the lazy import where the feature starts.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import NlpcliError


class MissingExtra(NlpcliError):
    """A feature needs a package of an extra that is not installed."""

    def __init__(self, feature: str, extra: str, module: str):
        self.feature = feature
        self.extra = extra
        self.module = module
        super().__init__(f"{feature} needs the {extra!r} extra: pip install 'nlpcli[{extra}]' (no module {module!r})")


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import `module` and return it, or raise MissingExtra naming the pip extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        # Only the module itself (or a package above it) missing is an extra not installed; a module that is
        # there but fails inside (a broken dependency of its own) keeps its own error.
        missing = getattr(e, "name", None)
        if missing is None or module == missing or module.startswith(missing + "."):
            raise MissingExtra(feature, extra, module) from None
        raise
