"""The agent loop: render → generate → parse → run tools → append → repeat.

Every message and tool-call event is committed to the session store before the next step, so a
run can be killed at any point and resumed with no committed turn lost (see
:mod:`whalebone.agent.toolrun` for what happens to a call that was cut short). The prompt is
append-only: reasoning is kept (``drop_thinking`` off), the date goes into the newest user turn
and never into the system prompt or the tool list, so every turn's prompt extends the last one
byte for byte and the engine's prefix cache serves it. A prefix break is reported as a warning
naming its cause. Every model call (turn, retry, compaction summary) is cleared with the budget
guard first and settled after.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import jinja2

from whalebone.agent import compaction as C
from whalebone.agent.budgeting import BudgetHook, BudgetStopped, CallKind
from whalebone.agent.config import AgentConfig
from whalebone.agent.events import (
    AgentEvent,
    Compacted,
    Done,
    Reasoning,
    StepStarted,
    StopReason,
    Text,
    ToolCalled,
    ToolFinished,
    UsageReport,
    Warning,
)
from whalebone.agent.facts import collect_facts
from whalebone.agent.generate import CallSpec, Generation, generate
from whalebone.agent.loops import LoopDetector
from whalebone.agent.prefix import mode_change
from whalebone.agent.store import Session, UsageRecord
from whalebone.agent.toolrun import ToolRunner
from whalebone.dsml import tokens as T
from whalebone.dsml.errors import EncodeError
from whalebone.dsml.models import ContentDelta, ParsedCompletion, ReasoningDelta
from whalebone.dsml.parser import CompletionParser
from whalebone.dsml.transcript import Transcript
from whalebone.dsml.untrusted import neutralise
from whalebone.engine.base import EngineError
from whalebone.engine.prices import UnknownPrice

if TYPE_CHECKING:
    from whalebone.agent.agent import Agent


_DATE = re.compile(r"\n\n\[today is \d{4}-\d{2}-\d{2}\]$")  # what _user_text appends


@dataclass
class _Call:
    """A finished model call: the parsed completion and the engine's record."""

    completion: ParsedCompletion
    generation: Generation


class Run:
    """One run over one open session (``Agent.stream`` makes these)."""

    def __init__(self, agent: Agent, session: Session, config: AgentConfig, *,
                 turn_kind: CallKind = "turn") -> None:
        self.agent = agent
        self.turn_kind = turn_kind  # what a turn is metered as ("heartbeat" for scheduled jobs)
        self.cfg = config
        self.session = session
        self.run_id = uuid.uuid4().hex[:12]
        self.started = time.monotonic()
        self.transcript = Transcript(config.mode, drop_thinking=False,
                                     reasoning_effort=config.reasoning_effort)
        self.history: list[dict[str, Any]] = []  # the conversation as rendered
        self.seqs: list[int] = []  # the stored index of each history message
        self.loops = LoopDetector(config.loop_limit, config.loop_max_cycle)
        self.runner = ToolRunner(agent.tools, session, config)
        self.schemas = agent.tools.schemas()  # once a run: schema building is not free
        self.task = ""
        self.steps = 0
        self.totals = [0, 0]  # prompt tokens, cache-hit tokens, over the run
        self.spent = 0.0  # USD over the run
        self.last: Generation | None = None  # the last turn's record
        self.estimate = 0  # prompt tokens of the last render, estimated
        self.pending_compaction: dict[str, Any] | None = None
        self.budget = BudgetHook(agent.budget, run_id=self.run_id, session_id=session.id,
                                 agent=config.name, facts=self._facts)
        self._unpriced: set[str] = set()
        self._warned: set[str] = set()
        self._tokenizer_ok = True

    # --- the loop ------------------------------------------------------------------------

    def load(self) -> None:
        """Take up the stored conversation, compaction markers applied (what a run, or a
        compaction on demand, continues from)."""
        for seq, msg in C.effective_history(self.session.messages()):
            self.history.append(msg)
            self.seqs.append(seq)
        if self.history:
            self.transcript.append(*self.history)

    async def go(self, task: str | None) -> AsyncIterator[AgentEvent]:
        self.load()
        if not any(m.get("role") == "user" for m in self.history):
            stored = self.session.open_task()  # a run killed before it wrote its task
            if stored is not None:
                task = stored if task in (None, stored) else f"{stored}\n\n{task}"
        if not self.history:
            # The system message and the task in one transaction: no kill leaves one alone.
            opening = [self._system_message()]
            if task is not None:
                opening.append({"role": "user", "content": self._user_text(task)})
                task = None
            self._commit(*opening)
        brk = mode_change(self.session, self.cfg, self.history, self.transcript)
        if brk is not None:
            yield brk
        first = next((m.get("content", "") for m in self.history if m.get("role") == "user"),
                     None)
        self.task = _DATE.sub("", first) if isinstance(first, str) else (task or "")
        outcomes, warnings = await self.runner.recover(self.history)
        for w in warnings:
            yield Warning(kind="interrupted_call", message=w)
        if outcomes:
            self._commit(*(o.message() for o in outcomes))
        if task is not None:
            self._commit({"role": "user", "content": self._user_text(task)})
        if self.history[-1].get("role") in ("system", "assistant"):
            yield self._done("answer", message="nothing to do: the session has no open task")
            return
        self.session.set_status("running")
        status = "error"  # an exception out of the loop: a failure
        ended = False
        try:
            async for event in self._steps():
                if isinstance(event, Done):
                    status = "done" if event.reason == "answer" else event.reason
                    ended = True
                yield event
        except Exception:
            raise  # status stays "error", or the end the run had already reached
        except BaseException:
            # Not a failure, whatever the exception: the consumer closed the stream
            # (GeneratorExit: the daemon at a checkpoint, a TUI's Ctrl+C), the task was
            # cancelled, or the process interrupted (a second Ctrl+C). Recorded as "error" it
            # would skew the auditor's base rates; a run that had already ended keeps its end.
            if not ended:
                status = "cancelled"
            raise
        finally:
            with anyio.CancelScope(shield=True):
                self.session.set_status(status)
                self.budget.outcome(status)

    async def _steps(self) -> AsyncIterator[AgentEvent]:
        retries = 0
        kind: CallKind = self.turn_kind
        for step in range(1, self.cfg.max_steps + 1):
            self.steps = step
            yield StepStarted(step=step)
            call: _Call | None = None
            try:
                async for event in self._model_call(kind):
                    if isinstance(event, _Call):
                        call = event
                    else:
                        yield event
            except BudgetStopped as e:
                yield self._done("budget", message=str(e))
                return
            except EngineError as e:
                yield Warning(kind="engine_error", message=str(e))
                yield self._done("error", message=f"{type(e).__name__}: {e}")
                return
            assert call is not None
            parsed, gen = call.completion, call.generation
            problem = self._problem(parsed, gen)
            assistant = self._assistant_message(parsed, keep_calls=problem is None)
            self._commit(assistant)
            if problem is not None:
                retries += 1
                yield Warning(kind="malformed_output", message=problem)
                if retries > self.cfg.parse_retries:
                    yield self._done("parse_retries", message=problem)
                    return
                self._commit({"role": "user", "content": "[whalebone] Your last message "
                              "could not be used:\n" + problem + "\nPlease try again."})
                kind = "retry"
                continue
            retries, kind = 0, self.turn_kind
            if not parsed.tool_calls:
                yield self._done("answer", answer=parsed.content)
                return
            for tc, call_ in zip(assistant["tool_calls"], parsed.tool_calls, strict=True):
                yield ToolCalled(call_id=tc["id"], name=call_.name,
                                 arguments=call_.parsed_arguments or {})
            outcomes = await self.runner.run(parsed.tool_calls,
                                             [tc["id"] for tc in assistant["tool_calls"]])
            self._commit(*(o.message() for o in outcomes))
            verdict = None
            for o in outcomes:
                yield ToolFinished(call_id=o.call_id, name=o.name, content=o.content,
                                   is_error=o.result.is_error, seconds=o.seconds)
                if o.ran:
                    verdict = verdict or self.loops.observe(o.name, o.arguments,
                                                            o.result.content)
            if verdict is not None:
                yield Warning(kind="loop", message=verdict.message)
                yield self._done("loop", message=verdict.message)
                return
        yield self._done("max_steps", message=f"stopped after {self.cfg.max_steps} steps")

    def _problem(self, parsed: ParsedCompletion, gen: Generation) -> str | None:
        """Why a completion cannot be used as it is (a correction for the model), or None."""
        if gen.finish_reason == "length":
            # Never salvage a cut-off completion: a half-written call must not run.
            return (f"- your reply was cut off at the limit of {self.cfg.max_tokens} tokens; "
                    "be briefer, or split the work into smaller steps")
        if parsed.tool_calls:
            return None  # broken calls among good ones go back as tool errors
        if any(e.rejects or e.call_index is not None for e in parsed.errors):
            return parsed.correction()
        return None

    def _done(self, reason: StopReason, *, answer: str = "", message: str = "") -> Done:
        return Done(reason=reason, answer=answer, message=message, session_id=self.session.id,
                    run_id=self.run_id, steps=self.steps, prompt_tokens=self.totals[0],
                    cache_hit_tokens=self.totals[1],
                    price=self.spent)

    # --- messages ------------------------------------------------------------------------

    def _system_message(self) -> dict[str, Any]:
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
        try:
            system = env.from_string(self.cfg.system).render(name=self.cfg.name,
                                                             **self.cfg.variables)
        except jinja2.TemplateError as e:
            raise EncodeError(f"the system prompt template does not render: {e}") from None
        message: dict[str, Any] = {"role": "system", "content": system}
        if self.schemas:
            message["tools"] = self.schemas
        return message

    def _user_text(self, task: str) -> str:
        text = neutralise(task)
        if self.cfg.date_in_task:  # volatile facts live in the newest user turn only
            text += f"\n\n[today is {dt.datetime.now(dt.UTC).date().isoformat()}]"  # see _DATE
        return text

    def _commit(self, *messages: dict[str, Any]) -> None:
        """Commit to the store first, then to the transcript (the store is the truth)."""
        first = self.session.next_seq
        self.session.append(*messages)
        self.transcript.append(*messages)
        self.history.extend(messages)
        self.seqs.extend(range(first, first + len(messages)))

    def _assistant_message(self, parsed: ParsedCompletion, *, keep_calls: bool
                           ) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": parsed.content}
        if self.cfg.mode == "thinking":
            msg["reasoning_content"] = parsed.reasoning_content
        if parsed.tool_calls and keep_calls:
            seq = self.session.next_seq  # unique within the session, stable across resumes
            msg["tool_calls"] = [c.to_openai(call_id=f"call_{seq}_{c.index}")
                                 for c in parsed.tool_calls]
        return msg

    # --- model calls ---------------------------------------------------------------------

    async def _model_call(self, kind: CallKind) -> AsyncIterator[AgentEvent | _Call]:
        render = self.transcript.render()
        if render.prefix_break is not None:
            brk = render.prefix_break
            yield Warning(kind="prefix_break", message=f"prompt rewritten from offset "
                          f"{brk.offset} (message {brk.message_index}): {brk.cause}")
        self.estimate = self._estimate(render.text, render.prefix_break is None)
        window = getattr(self.agent.engine, "context_window", 1_048_576)
        if self.estimate + self.cfg.max_tokens >= self.cfg.compact_at * window:
            async for event in C.near_limit(self):  # older turns become a summary
                yield event
        parser = CompletionParser(self.cfg.mode, tools=self.schemas)
        gen = Generation()
        async for event in self._generate(kind, self.cfg.max_tokens, gen):
            for ev in parser.feed(event):
                if isinstance(ev, ReasoningDelta):
                    yield Reasoning(text=ev.text)
                elif isinstance(ev, ContentDelta):
                    yield Text(text=ev.text)
        if gen.finish_reason == "stop" and not gen.text.endswith(T.EOS):
            parser.feed(T.EOS)  # engines stop on EOS without returning its text
        parser.close()
        usage = self._usage(kind, gen)
        yield usage
        if gen.model in self._unpriced and gen.model not in self._warned:
            self._warned.add(gen.model)
            yield Warning(kind="unpriced", message=f"no price is known for model {gen.model!r}:"
                          " its calls are counted at $0 (add it to the price table)")
        self.last = gen
        if self.pending_compaction is not None:
            yield Compacted(**self.pending_compaction, tokens_after=gen.prompt_tokens,
                            hit_rate_after=usage.hit_rate)
            self.pending_compaction = None
        yield _Call(completion=parser.result, generation=gen)

    async def _generate(self, kind: CallKind, max_tokens: int, gen: Generation
                        ) -> AsyncIterator[str]:
        """One metered engine call: cleared by the budget guard first, settled after."""
        engine = self.agent.engine
        model = getattr(engine, "model", "unknown")
        # Never ask for more than the window leaves (an engine would refuse the whole call).
        room = getattr(engine, "context_window", 1_048_576) - self.estimate
        max_tokens = max(1, min(max_tokens, room))
        hits = 0 if self.last is None else self.last.prompt_tokens + self.last.completion_tokens
        ticket = await self.budget.before(kind=kind, model=model, prompt_tokens=self.estimate,
                                          cached_tokens=hits, max_tokens=max_tokens)
        spec = CallSpec(max_tokens=max_tokens, thinking_mode=self.cfg.mode,
                        reasoning_effort=self.cfg.reasoning_effort,
                        temperature=self.cfg.temperature, seed=self.cfg.seed,
                        session_id=self.session.id)
        try:
            async for delta in generate(engine, self.transcript.text, spec, gen,
                                        messages=self._openai_form):
                yield delta
        except BaseException:
            self.budget.release(ticket)
            raise
        self.budget.settle(ticket, gen, model)

    def _openai_form(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        return self.transcript.messages, self.schemas or None

    def _estimate(self, new_text: str, appended: bool) -> int:
        """Prompt tokens of the current render: the last call's prompt and completion plus the
        new text, so O(new text), never O(conversation).

        Tokenizing costs ~2 µs a character, so the new text is counted exactly only where it
        matters: for the budget guard's reservation, and near the compaction threshold.
        Elsewhere its length in characters stands in, which is never less than its tokens.
        """
        if not (appended and self.last is not None):
            return self._count(self.transcript.text)
        base = self.last.prompt_tokens + self.last.completion_tokens
        upper = base + len(new_text)
        window = getattr(self.agent.engine, "context_window", 1_048_576)
        if self.agent.budget is None and upper + self.cfg.max_tokens < self.cfg.compact_at * window:
            return upper
        return base + self._count(new_text)

    def _count(self, text: str) -> int:
        if self._tokenizer_ok:
            try:
                return int(self.agent.engine.count_tokens(text))
            except Exception:  # no tokenizer installed: estimate, never fail a run on it
                self._tokenizer_ok = False
        return len(text) // 3 + 1

    def _usage(self, kind: CallKind, g: Generation) -> UsageReport:
        price = self._price(g)
        self.session.record_usage(UsageRecord(
            kind=kind, engine=g.engine, prompt_tokens=g.prompt_tokens,
            cache_hit_tokens=g.cache_hit_tokens, cache_miss_tokens=g.cache_miss_tokens,
            completion_tokens=g.completion_tokens, price=price))
        self.totals[0] += g.prompt_tokens
        self.totals[1] += g.cache_hit_tokens
        self.spent += price
        return UsageReport(kind=kind, model=g.model, price=price,
                           prompt_tokens=g.prompt_tokens, cache_hit_tokens=g.cache_hit_tokens,
                           cache_miss_tokens=g.cache_miss_tokens,
                           completion_tokens=g.completion_tokens,
                           session_prompt_tokens=self.totals[0],
                           session_cache_hit_tokens=self.totals[1],
                           engine_seconds=g.engine_seconds)

    def _price(self, g: Generation) -> float:
        try:
            return self.agent.prices.cost(g.model, cache_hit_tokens=g.cache_hit_tokens,
                                          cache_miss_tokens=g.cache_miss_tokens,
                                          completion_tokens=g.completion_tokens)
        except UnknownPrice:
            self._unpriced.add(g.model)  # _model_call warns once per model
            return 0.0

    def _facts(self) -> dict[str, Any]:
        return collect_facts(self.session, task=self.task, steps=self.steps,
                             started=self.started)


def __getattr__(name: str) -> Any:
    # ``from whalebone.agent.loop import Agent, AgentConfig`` predates agent.py; keep it working.
    if name == "Agent":
        from whalebone.agent.agent import Agent

        return Agent
    if name == "AgentConfig":
        return AgentConfig
    raise AttributeError(name)
