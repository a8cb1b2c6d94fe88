"""The bottom room: what every other room may import, and which imports no other room.

- :mod:`~whalebone.core.errors`  ``WhaleboneError``, the root of every error (its docstring
  draws the whole hierarchy)
- :mod:`~whalebone.core.home`    the home folder (the one reader of ``WHALEBONE_HOME``) and
  private (0700/0600) files in it
- :mod:`~whalebone.core.sqlite`  one way to open a database and to write to it
- :mod:`~whalebone.core.usage`   ``TokenCounts``, the one shape of a call's token counts

Rooms, bottom to top (a room imports only rooms below it, not even lazily)::

    core <- dsml <- engine <- tools, memory, budget <- agent <- tui, daemon, training
"""

from whalebone.core.errors import WhaleboneError
from whalebone.core.home import home
from whalebone.core.usage import TokenCounts

__all__ = ["TokenCounts", "WhaleboneError", "home"]
