"""The DeepSeek V4 prompt codec.

Render conversations byte for byte as V4's reference encoder does, parse completions (strict,
tolerant and streaming), emit DSML tool calls, render append-only transcripts, and neutralise
untrusted text so it can never forge a special token.
"""

from whalebone.dsml import tokens
from whalebone.dsml.errors import EncodeError, ParseError, PrefixBreakError, WhaleboneError

__all__ = [
    "EncodeError",
    "ParseError",
    "PrefixBreakError",
    "WhaleboneError",
    "tokens",
]
