"""An engine that replays fixed completions: for tests, demos and evaluation harnesses.

The completions are scripted, everything else is real: the prompt is tokenized with the real V4
tokenizer, prompt-cache hits are counted the way the bundled engine's prefix cache counts them
(the longest token prefix shared with an earlier request's prompt plus completion), completions
stream in small deltas, ``max_tokens`` and stop strings are honoured, and cancellation stops the
stream. So a loop driven by it exercises the real codec and the real token accounting.

:class:`ReplayEngine` answers by the conversation instead of by arrival order: the n-th model call
*of a session* (n counted from the assistant turns already in the prompt) gets the n-th
completion, so a session resumed after a restart continues its script where it stopped and
concurrent sessions do not take each other's completions. :func:`load_script` reads the files
both take (``scripted:FILE`` and ``replay:FILE`` in ``whalebone.engine.factory``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import anyio

from whalebone.dsml import tokens as T
from whalebone.dsml.encoder import encode_messages
from whalebone.dsml.transcript import common_prefix_len
from whalebone.engine.base import (
    Engine,
    EngineError,
    Finished,
    GenerationRequest,
    StreamEvent,
    TextDelta,
    Usage,
)
from whalebone.engine.factory import EngineSpecError

Script = Iterable[str] | Callable[[GenerationRequest], str]


class ScriptExhausted(EngineError):
    """The script has no completion left for this request."""


def load_script(path: str | Path, label: str = "script") -> list[str]:
    """The completions in a script file, in order: one JSON list of completion strings, or JSON
    lines, each a string or an object with a ``completion`` string (blank lines and lines
    starting with ``#`` skipped). ``label`` names the file in errors ("replay script")."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EngineSpecError(f"cannot read the {label} {p}: "
                              f"{getattr(e, 'strerror', None) or e}") from None
    if text.strip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise EngineSpecError(f"the {label} {p} is not a JSON list ({e.msg})") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise EngineSpecError(f"the {label} {p} must be a JSON list of completion strings")
        completions: list[str] = items
    else:
        completions = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise EngineSpecError(f"the {label} {p}:{number}: not JSON ({e.msg})") from None
            if isinstance(item, dict) and isinstance(item.get("completion"), str):
                item = item["completion"]
            if not isinstance(item, str):
                raise EngineSpecError(
                    f"the {label} {p}:{number}: expected a JSON string or an object with a "
                    "'completion' string (or the whole file one JSON list of completion strings)")
            completions.append(item)
    if not completions:
        raise EngineSpecError(f"the {label} {p} holds no completions")
    return completions


class ScriptedEngine(Engine):
    """Replay ``script`` (a sequence of completions, or a function of the request).

    Each completion is what a V4 model would write after the prompt, e.g.
    ``"I will look.</think>\\n\\n<｜DSML｜tool_calls>…<｜end▁of▁sentence｜>"``.
    """

    def __init__(self, script: Script, *, name: str = "scripted",
                 model: str = "whalebone-local", context_window: int = 1_048_576,
                 delta_chars: int = 3, delay: float = 0.0) -> None:
        self._next: Callable[[GenerationRequest], str]
        if callable(script):
            self._next = script
        else:
            items = iter(script)

            def take(_: GenerationRequest) -> str:
                try:
                    return next(items)
                except StopIteration:
                    raise ScriptExhausted("the script has no completion left") from None

            self._next = take
        self.name = name
        self.model = model
        self.context_window = context_window
        self.delta_chars = max(1, delta_chars)
        self.delay = delay
        self.requests: list[GenerationRequest] = []
        self._seen: list[list[int]] = []  # token ids of earlier prompts + completions

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        from whalebone.dsml.tokenizer import load_tokenizer

        if request.prompt_ids is not None:
            return list(request.prompt_ids)
        if request.prompt is not None:
            return load_tokenizer().encode(request.prompt)
        if request.messages is not None:
            prompt = encode_messages(request.messages, request.thinking_mode,
                                     reasoning_effort=request.reasoning_effort)
            return load_tokenizer().encode(prompt)
        raise EngineError("a request needs a prompt, prompt ids or messages")

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        from whalebone.dsml.tokenizer import load_tokenizer

        tok = load_tokenizer()
        self.requests.append(request)
        ids = self._prompt_ids(request)
        if len(ids) + request.max_tokens > self.context_window:
            raise EngineError(f"prompt of {len(ids)} tokens + max_tokens {request.max_tokens} "
                              f"exceeds the context window of {self.context_window}")
        hit = max((common_prefix_len(ids, seen) for seen in self._seen), default=0)
        completion = self._next(request)

        # Cut at the first stop string (EOS always stops), then at max_tokens.
        finish = "length"
        stops = [T.EOS, *request.stop]
        cut = min((i for i in (completion.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            completion, finish = completion[:cut], "stop"
        out_ids = tok.encode(completion)
        if len(out_ids) > request.max_tokens:
            out_ids = out_ids[: request.max_tokens]
            completion, finish = tok.decode(out_ids), "length"
        # A completion with no stop string in it ends as "length": the model did not stop.

        for i in range(0, len(completion), self.delta_chars):
            if self.delay:
                await anyio.sleep(self.delay)
            else:
                await anyio.lowlevel.checkpoint()
            yield TextDelta(text=completion[i:i + self.delta_chars])
        self._seen.append(ids + out_ids)
        usage = Usage(prompt_tokens=len(ids), prompt_cache_hit_tokens=hit,
                      prompt_cache_miss_tokens=len(ids) - hit,
                      completion_tokens=len(out_ids) + (1 if finish == "stop" else 0))
        yield Finished(finish_reason=finish, text=completion, usage=usage,  # type: ignore[arg-type]
                       engine=self.name, model=self.model)


class ReplayEngine(ScriptedEngine):
    """Replay ``completions`` by a session's turn: a call whose prompt already holds n
    assistant turns gets ``completions[n]``. Untrusted text is neutralised before it enters a
    prompt, so only real turns carry the Assistant token (the prompt ends with the one this
    call answers)."""

    def __init__(self, completions: list[str], *, label: str = "replay script",
                 name: str = "replay", **options: Any) -> None:
        self.completions = list(completions)

        def by_turn(request: GenerationRequest) -> str:
            turn = (request.prompt or "").count(T.ASSISTANT) - 1
            if not 0 <= turn < len(self.completions):
                raise ScriptExhausted(f"the {label} has no completion for model call "
                                      f"{turn + 1} of this session")
            return self.completions[turn]

        super().__init__(by_turn, name=name, **options)
