"""Old public names kept working, with a warning, after a rename.

A module that renamed ``Old`` to ``New`` ends with::

    __getattr__ = renamed(__name__, {"Old": "New"})

``from module import Old`` then still works and gives ``New`` itself, with a
``DeprecationWarning`` naming the new name; nothing else about the module changes. A new name
of the form ``"package.module:New"`` lives in another module, imported only when the old name
is used.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable
from typing import Any


def renamed(module: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that resolves each old name in ``names`` to its new one (in
    ``module``, or ``"package.module:Name"``)."""

    def __getattr__(name: str) -> Any:
        new = names.get(name)
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        where, _, attr = new.rpartition(":")
        warnings.warn(f"{module}.{name} is deprecated: use {where + '.' if where else ''}"
                      f"{attr}", DeprecationWarning, stacklevel=2)
        home = importlib.import_module(where) if where else sys.modules[module]
        return getattr(home, attr)

    return __getattr__
