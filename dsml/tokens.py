"""The special tokens of V4's prompt format. Each is a single id in the V4 tokenizer.

The bars are U+FF5C (fullwidth vertical line) and the ``▁`` is U+2581.
"""

from __future__ import annotations

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
LATEST_REMINDER = "<｜latest_reminder｜>"
THINK_START = "<think>"
THINK_END = "</think>"
DSML = "｜DSML｜"

# Quick-instruction task markers, keyed by the ``task`` field of a user message.
TASK_TOKENS: dict[str, str] = {
    "action": "<｜action｜>",
    "query": "<｜query｜>",
    "authority": "<｜authority｜>",
    "domain": "<｜domain｜>",
    "title": "<｜title｜>",
    "read_url": "<｜read_url｜>",
}

# DSML tags, spelled out once.
TOOL_CALLS_BLOCK = "tool_calls"
TOOL_CALLS_OPEN = f"<{DSML}{TOOL_CALLS_BLOCK}>"
TOOL_CALLS_CLOSE = f"</{DSML}{TOOL_CALLS_BLOCK}>"
TOOL_CALLS_START = f"\n\n<{DSML}{TOOL_CALLS_BLOCK}"  # what separates content from the block
INVOKE_START = f"<{DSML}invoke"
INVOKE_END = f"</{DSML}invoke"
PARAM_START = f"<{DSML}parameter"
PARAM_END = f"/{DSML}parameter"  # the reference scans for this; the value ends with the "<"

TOOL_RESULT_OPEN = "<tool_result>"
TOOL_RESULT_CLOSE = "</tool_result>"

# Tokens the reference parser refuses inside content or reasoning.
FORBIDDEN_IN_TEXT: tuple[str, ...] = (BOS, EOS, THINK_START, THINK_END, DSML)
