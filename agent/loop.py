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
from whalebone.agent.budgeting import BudgetHook, CallKind
from whalebone.agent.config import AgentConfig
from whalebone.agent.conversation import Conversation
from whalebone.agent.events import (
    AgentEvent,
    AnswerText,
    Compacted,
    Done,
    Reasoning,
    RunWarning,
    StepStarted,
    StopReason,
    ToolCalled,
    ToolFinished,
    UsageReport,
)
from whalebone.agent.facts import collect_facts
from whalebone.agent.generate import CallSpec, Generation, generate
from whalebone.agent.loop_detector import LoopDetector
from whalebone.agent.prefix import mode_change
from whalebone.agent.store import Session, UsageRecord
from whalebone.agent.toolrun import ToolRunner
from whalebone.budget.guard import BudgetStop
from whalebone.dsml import tokens as T
from whalebone.dsml.errors import EncodeError
from whalebone.dsml.models import ContentDelta, ParsedCompletion, ReasoningDelta
from whalebone.dsml.parser import CompletionParser
from whalebone.dsml.untrusted import neutralise
from whalebone.engine.base import Engine, EngineError
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
        self.conversation = Conversation(session, config, self._count)
        self.loops = LoopDetector(config.loop_limit, config.loop_max_cycle)
        self.runner = ToolRunner(agent.tools, session, config)
        self.schemas = agent.tools.schemas()  # once a run: schema building is not free
        self.task = ""
        self.steps = 0
        self.totals = [0, 0]  # prompt tokens, cache-hit tokens, over the run
        self.spent = 0.0  # USD over the run
        self.pending_compaction: dict[str, Any] | None = None  # until the next turn reports it
        # Read once: an engine's window does not change during a run.
        self.window: int = getattr(agent.engine, "context_window", Engine.context_window)
        self.budget = BudgetHook(agent.budget, run_id=self.run_id, session_id=session.id,
                                 agent=config.name, facts=self._facts)
        self._unpriced: set[str] = set()
        self._warned: set[str] = set()
        self._tokenizer_ok = True

    # --- the loop ------------------------------------------------------------------------

    async def go(self, task: str | None) -> AsyncIterator[AgentEvent]:
        conv = self.conversation
        conv.load()
        if not any(m.get("role") == "user" for m in conv.history):
            stored = self.session.open_task()  # a run killed before it wrote its task
            if stored is not None:
                task = stored if task in (None, stored) else f"{stored}\n\n{task}"
        if not conv.history:
            # The system message and the task in one transaction: no kill leaves one alone.
            opening = [self._system_message()]
            if task is not None:
                opening.append({"role": "user", "content": self._user_text(task)})
                task = None
            self._commit(*opening)
        brk = mode_change(self.session, self.cfg, conv.history, conv.transcript)
        if brk is not None:
            yield brk
        first = next((m.get("content", "") for m in conv.history if m.get("role") == "user"),
                     None)
        self.task = _DATE.sub("", first) if isinstance(first, str) else (task or "")
        outcomes, warnings = await self.runner.recover(conv.history)
        for w in warnings:
            yield RunWarning(kind="interrupted_call", message=w)
        if outcomes:
            self._commit(*(o.message() for o in outcomes))
        if task is not None:
            self._commit({"role": "user", "content": self._user_text(task)})
        if conv.history[-1].get("role") in ("system", "assistant"):
            yield self._done("answer", message="nothing to do: the session has no open task")
            return
        self.session.set_status("running")
        note = self.budget.notice()
        if note:
            yield RunWarning(kind="budget", message=note)
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
            except BudgetStop as e:
                yield self._done("budget", message=str(e))
                return
            except EngineError as e:
                yield RunWarning(kind="engine_error", message=str(e))
                yield self._done("error", message=f"{type(e).__name__}: {e}")
                return
            assert call is not None
            parsed, gen = call.completion, call.generation
            problem = self._problem(parsed, gen)
            assistant = self._assistant_message(parsed, keep_calls=problem is None)
            self._commit(assistant)
            if problem is not None:
                retries += 1
                yield RunWarning(kind="malformed_output", message=problem)
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
                yield RunWarning(kind="loop", message=verdict.message)
                yield self._done("loop", message=verdict.message)
                return
        yield self._done("max_steps", message=f"stopped after {self.cfg.max_steps} steps")

    def compacted(self, report: dict[str, Any]) -> None:
        """A compaction replaced older turns: repetition is judged afresh, and the next turn
        reports ``report`` (the :class:`Compacted` figures known so far)."""
        self.loops.reset()
        self.pending_compaction = report

    def take_compaction(self) -> dict[str, Any] | None:
        """The figures of a compaction no turn has reported yet, handed over (and cleared) for
        the caller to report."""
        report, self.pending_compaction = self.pending_compaction, None
        return report

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
        if self.cfg.instructions:  # untrusted text from the workspace: never a template
            system += "\n\n" + neutralise(self.cfg.instructions)
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
        self.conversation.commit(*messages)

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
        conv = self.conversation
        render = conv.transcript.render()
        if render.prefix_break is not None:
            brk = render.prefix_break
            yield RunWarning(kind="prefix_break", message=f"prompt rewritten from offset "
                          f"{brk.offset} (message {brk.message_index}): {brk.cause}")
        conv.estimate = self._estimate(render.text, render.prefix_break is None)
        if conv.estimate + self.cfg.max_tokens >= self.cfg.compact_at * self.window:
            async for event in C.near_limit(self):  # older turns become a summary
                yield event
        parser = CompletionParser(self.cfg.mode, tools=self.schemas)
        gen = Generation()
        async for event in self.call_model(kind, self.cfg.max_tokens, gen):
            for ev in parser.feed(event):
                if isinstance(ev, ReasoningDelta):
                    yield Reasoning(text=ev.text)
                elif isinstance(ev, ContentDelta):
                    yield AnswerText(text=ev.text)
        if gen.finish_reason == "stop" and not gen.text.endswith(T.EOS):
            parser.feed(T.EOS)  # engines stop on EOS without returning its text
        parser.close()
        usage = self.record_usage(kind, gen)
        yield usage
        if gen.model in self._unpriced and gen.model not in self._warned:
            self._warned.add(gen.model)
            yield RunWarning(kind="unpriced", message=f"no price is known for model {gen.model!r}:"
                          " its calls are counted at $0 (add it to the price table)")
        conv.last = gen
        report = self.take_compaction()
        if report is not None:
            yield Compacted(**report, tokens_after=gen.prompt_tokens,
                            hit_rate_after=usage.hit_rate)
        yield _Call(completion=parser.result, generation=gen)

    async def call_model(self, kind: CallKind, max_tokens: int, gen: Generation
                         ) -> AsyncIterator[str]:
        """One metered engine call on the conversation's current prompt, streaming its text
        and filling ``gen``: cleared by the budget guard first, settled after."""
        engine = self.agent.engine
        conv = self.conversation
        model = getattr(engine, "model", "unknown")
        # Never ask for more than the window leaves (an engine would refuse the whole call).
        room = self.window - conv.estimate
        max_tokens = max(1, min(max_tokens, room))
        ticket = await self.budget.before(kind=kind, model=model, prompt_tokens=conv.estimate,
                                          cached_tokens=conv.cached_tokens,
                                          max_tokens=max_tokens)
        spec = CallSpec(max_tokens=max_tokens, thinking_mode=self.cfg.mode,
                        reasoning_effort=self.cfg.reasoning_effort,
                        temperature=self.cfg.temperature, seed=self.cfg.seed,
                        session_id=self.session.id)
        try:
            async for delta in generate(engine, conv.transcript.text, spec, gen,
                                        messages=self._openai_form):
                yield delta
        except BaseException:
            self.budget.release(ticket)
            raise
        self.budget.settle(ticket, gen, model)

    def _openai_form(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        return self.conversation.transcript.messages, self.schemas or None

    def _estimate(self, new_text: str, appended: bool) -> int:
        """Prompt tokens of the current render: the last call's prompt and completion plus the
        new text, so O(new text), never O(conversation).

        Tokenizing costs ~2 µs a character, so the new text is counted exactly only where it
        matters: for the budget guard's reservation, and near the compaction threshold.
        Elsewhere its length in characters stands in, which is never less than its tokens.
        """
        conv = self.conversation
        if not (appended and conv.last is not None):
            return self._count(conv.transcript.text)
        base = conv.cached_tokens
        upper = base + len(new_text)
        if self.agent.budget is None and \
                upper + self.cfg.max_tokens < self.cfg.compact_at * self.window:
            return upper
        return base + self._count(new_text)

    def _count(self, text: str) -> int:
        if self._tokenizer_ok:
            try:
                return int(self.agent.engine.count_tokens(text))
            except Exception:  # no tokenizer installed: estimate, never fail a run on it
                self._tokenizer_ok = False
        return len(text) // 3 + 1

    def record_usage(self, kind: CallKind, g: Generation) -> UsageReport:
        """Store and total one finished call's usage; its report for the caller."""
        price = self._price(g)
        counts = g.count_fields()
        self.session.record_usage(UsageRecord(kind=kind, engine=g.engine, price=price, **counts))
        self.totals[0] += g.prompt_tokens
        self.totals[1] += g.cache_hit_tokens
        self.spent += price
        return UsageReport(kind=kind, model=g.model, price=price, **counts,
                           run_prompt_tokens=self.totals[0],
                           run_cache_hit_tokens=self.totals[1],
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
