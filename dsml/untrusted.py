"""Neutralise untrusted text before it is rendered into a V4 prompt.

Text that comes from outside (user input, file contents, tool output, memory, HTTP bodies) may
contain the literal strings of V4's special tokens. Rendered verbatim, a tool result holding
``</tool_result><｜Assistant｜>`` would close its turn and let the tool speak as the model, and
``<｜DSML｜invoke`` inside a parameter would forge a call. :func:`neutralise` breaks every such
string by inserting a ZERO WIDTH SPACE (U+200B) after its first character: the text still reads
the same to a person and nearly the same to the model, but it can no longer match a special
token, a DSML tag or the ``<tool_result>`` framing, neither in the codec's parser nor in the V4
tokenizer (whose 1,283 added tokens all belong to the families below).

Rendering does not call this for you: the encoder must stay byte-identical to V4's reference,
which renders whatever it is given. The agent loop neutralises at the boundary where outside text
enters a conversation.
"""

from __future__ import annotations

import re

ZWSP = "\u200b"

# Every special-token family of the V4 tokenizer, plus the tool-result framing:
#   <｜…｜>  (fullwidth bars: BOS, EOS, roles, tasks, placeholders, fim, tool markers)
#   <|…|>   (ASCII bars: <|EOT|>, multimodal placeholders)
#   ｜DSML｜  <think> </think>  <dsml: </dsml:  <tool_result> </tool_result>  <｜/table>｜
_SPECIAL = re.compile(
    r"<｜[^｜<>\n]{0,80}｜>"
    r"|<\|[^|<>\n]{0,80}\|>"
    r"|｜DSML｜"
    r"|</?think>"
    r"|</?dsml:"
    r"|</?tool_result>"
    r"|<｜/table>｜"  # one odd added token closes with its bar after the ">"
)


def _break(match: re.Match[str]) -> str:
    s = match.group(0)
    return s[0] + ZWSP + s[1:]


def neutralise(text: str) -> str:
    """Return ``text`` with every special-token string broken by a zero-width space.

    Idempotent, and the identity on text that holds no special-token string. Overlapping
    occurrences are all broken (the substitution runs until nothing matches).
    """
    while True:
        out = _SPECIAL.sub(_break, text)
        if out == text:
            return out
        text = out


def contains_special(text: str) -> bool:
    """True when ``text`` holds a special-token string (i.e. neutralise would change it)."""
    return _SPECIAL.search(text) is not None
