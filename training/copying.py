"""Copy-dense examples: short conversations whose every answer token is a copy.

Issue 10 found what the agent families need and nano lacks: copying a number, name or path
found by content in the prompt. Published work on induction (Chan et al. 2022; Zucchet et al.
2025) says the skill comes sooner with repetition in context, bursty draws over many rare
classes, and short contexts. So each example is one user turn holding a small pool of items,
each item used 1-3 times ("bursty"), and the answer repeats the turn's text exactly — no
system prompt or tool list (the head is the BOS alone, so a step's copy batch costs little).

Items are drawn per class, uniformly over what the class can spell:

- ``number``: 1-9 digits, the digit count uniform, so every 3-digit chunk the V4 tokenizer
  makes (000-999, ~1,100 ids, the rarest in the data) is drawn about equally;
- ``word``: a word or a name of the task families' lists;
- ``path``: a file name, alone or under a folder.

The text is the chat template's own (``encode_messages`` / ``emit_completion``): the same user
and assistant markers and reasoning form as the agent families, so what the model learns here
is learnt where it is needed.
"""

from __future__ import annotations

import random

from whalebone.dsml import emit_completion, encode_messages
from whalebone.training.data import Example
from whalebone.training.tasks import DIRS, NAMES, WORDS, _fname

CLASSES = ("number", "word", "path")
ASKS = ("Repeat after me: {t}", "Say exactly this: {t}", "Copy this text exactly: {t}",
        "repeat {t}", "Please repeat: {t}", "Echo this back:\n{t}")


def item(rng: random.Random, kind: str) -> str:
    if kind == "number":
        n = rng.randint(1, 9)
        return str(rng.randrange(10 ** (n - 1) if n > 1 else 0, 10**n))
    if kind == "word":
        return rng.choice(WORDS if rng.random() < 0.7 else NAMES)
    return _fname(rng) if rng.random() < 0.4 else f"{rng.choice(DIRS)}/{_fname(rng)}"


def copy_example(rng: random.Random) -> Example:
    """One copy-dense conversation (family ``copy``): 3-6 items, 5-14 uses."""
    pool = [item(rng, rng.choice(CLASSES)) for _ in range(rng.randint(3, 6))]
    uses = [rng.choice(pool) for _ in range(rng.randint(5, 14))]
    text = rng.choice([" ", ", ", "; ", "\n"]).join(uses)
    prompt = encode_messages([{"role": "user", "content": rng.choice(ASKS).format(t=text)}],
                             thinking_mode="thinking")
    answer = emit_completion(text, reasoning="Repeat it.")
    bos = "<｜begin▁of▁sentence｜>"
    assert prompt.startswith(bos)
    return Example("copy", bos, [(prompt[len(bos):], False), (answer, True)])
