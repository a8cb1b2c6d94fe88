"""whalebone: an agent runtime for DeepSeek V4.

The public surface is small and grows room by room:

- ``whalebone.dsml``   the V4 prompt codec (render, parse, stream, neutralise untrusted text)
- ``whalebone.engine`` the bundled V4 engine and clients for engines elsewhere
- ``whalebone.agent``  the persistent agent loop and the ``whalebone`` command
- ``whalebone.tools``, ``whalebone.memory``, ``whalebone.budget``, ``whalebone.tui``

Importing ``whalebone`` never imports torch: the engine extra is loaded only when used.
"""

from whalebone.dsml.errors import EncodeError, ParseError, PrefixBreakError, WhaleboneError

__version__ = "0.1.0"

__all__ = [
    "EncodeError",
    "ParseError",
    "PrefixBreakError",
    "WhaleboneError",
    "__version__",
]
