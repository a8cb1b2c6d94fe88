"""Old public names kept working, with a warning, after a rename.

A module that renamed ``Old`` to ``New`` ends with::

    __getattr__ = renamed(__name__, {"Old": "New"})

``from module import Old`` then still works and gives ``New`` itself, with a
``DeprecationWarning`` naming the new name; nothing else about the module changes.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any


def renamed(module: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that resolves each old name in ``names`` to the module's
    new one."""

    def __getattr__(name: str) -> Any:
        new = names.get(name)
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(f"{module}.{name} is deprecated: use {new}", DeprecationWarning,
                      stacklevel=2)
        return getattr(sys.modules[module], new)

    return __getattr__
