"""Speculative decoding with V4's MTP block: up to two tokens per trunk pass, the same tokens as
plain greedy decoding.

Plain decoding feeds the last sampled token u and samples the next from the new logits. With an
MTP block (V4 ships one, predicting the token after next) and greedy sampling, a step instead:

1. drafts d, the token after u, with the MTP block from the trunk's streams of u's predecessor
   and u's id (:meth:`Drafter.draft`);
2. feeds [u, d] to the trunk in ONE forward, after :meth:`SeqState.mark`;
3. takes the argmax a of the logits after u: it is what plain decoding would have sampled. If
   a == d, the draft was right: the logits after d give one more token, two tokens for one trunk
   pass. Else the trunk forgets d (:meth:`SeqState.rollback`) and a is the step's one token.

Same output, bit for bit: a forward of two tokens computes each row with the kernels of a
one-token step (:data:`whalebone.engine.v4.layers.EXACT_ROWS`), the LM head
(:meth:`Transformer.logits`) included. So every argmax, the
trunk state and every snapshot equal plain decoding's. The MTP block sees accepted tokens only;
after a prefix-cache restore it is warmed from the streams of the prefill's last window, and
snapshots hold the trunk state alone (a restore drafts from a cold window until it refills).

Whether it pays depends on the machine: a verify pass of two tokens costs more than a one-token
pass (its MoE routes two tokens, each GEMM reads its weights per row), the draft costs a block
and an LM head, and only accepted drafts save a pass. So by default (``auto``) the engine keeps
running means of a plain step's time, a speculative step's time and the acceptance rate
(:class:`Pace`) and drafts only while ``(1 + acceptance) / speculative step > 1 / plain step``,
trying the other kind for two steps every :data:`PROBE` (the first draft after plain steps
catches the block up on the positions it missed, which is not a step's cost); drafting probes
back off, up to every :data:`PROBE_MAX` steps, while they keep finding it does not pay.
``on`` always drafts, ``off`` never: ``BundledEngine(..., speculative="on")`` or
``WHALEBONE_SPECULATIVE=on``.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import torch

from whalebone.engine.v4.layers import rows_as_batch

if TYPE_CHECKING:
    from whalebone.engine.runtime.bundled import BundledEngine, _Run
    from whalebone.engine.runtime.sampling import Sampler
    from whalebone.engine.v4.model import Transformer
    from whalebone.engine.v4.state import Mark

ENV = "WHALEBONE_SPECULATIVE"
MODES = ("auto", "on", "off")
PROBE = 32  # in auto mode, every PROBE-th step of a request runs the kind not chosen
PROBE_MAX = 1024  # drafting probes back off this far while they keep saying it does not pay
_ALIASES = {"1": "on", "true": "on", "yes": "on", "always": "on", "0": "off", "false": "off",
            "no": "off", "never": "off", "": "off"}


def mode_from(value: str | bool | None) -> str:
    """``auto``, ``on`` or ``off`` from a constructor argument (True/False/None or a mode) or,
    when it is None, from ``$WHALEBONE_SPECULATIVE`` (unset: ``off``: on this CPU a verify pass
    of two exact rows costs about two one-token steps, so drafting does not pay yet;
    ``bench/engine_spec_bench.py`` measures it)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    raw = os.environ.get(ENV, "") if value is None else value
    mode = _ALIASES.get(raw.strip().lower(), raw.strip().lower())
    if mode not in MODES:
        raise ValueError(f"speculative decoding mode must be one of {', '.join(MODES)} "
                         f"(or 1/0), got {raw!r}" + (f" from ${ENV}" if value is None else ""))
    return mode


class Pace:
    """Whether drafting pays on this machine and model: running means (over the engine's
    life) of a plain decode step's seconds, a speculative step's seconds and the share of
    drafts accepted."""

    WEIGHT = 0.2  # of the newest step in each running mean

    def __init__(self) -> None:
        self.plain_s: float | None = None
        self.spec_s: float | None = None
        self.acceptance: float | None = None

    def _mean(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.WEIGHT * (new - old)

    def plain(self, seconds: float) -> None:
        self.plain_s = self._mean(self.plain_s, seconds)

    def speculative(self, seconds: float | None, accepted: bool) -> None:
        """A speculative step (``seconds`` None: not a typical step's time)."""
        if seconds is not None:
            self.spec_s = self._mean(self.spec_s, seconds)
        self.acceptance = self._mean(self.acceptance, float(accepted))

    def pays(self) -> bool:
        """Drafting gives more tokens per second (True until both kinds are measured)."""
        if self.plain_s is None or self.spec_s is None or self.acceptance is None:
            return True
        return self.spec_s < (1 + self.acceptance) * self.plain_s

    def __str__(self) -> str:
        if self.plain_s is None or self.spec_s is None or self.acceptance is None:
            return "not measured yet"
        return (f"plain step {1e3 * self.plain_s:.1f} ms, speculative step "
                f"{1e3 * self.spec_s:.1f} ms, {100 * self.acceptance:.0f}% of drafts accepted")


class Drafter:
    """One request's MTP side: the block's window state and the trunk streams it has not seen
    yet (``rows``: positions ``state.pos`` … , the last one the trunk's newest)."""

    def __init__(self, model: Transformer, mask: torch.Tensor | None = None) -> None:
        self.model = model
        self.window = model.cfg.window_size
        self.state = model.new_mtp_state()
        self.rows: list[torch.Tensor] = []  # (1, hc, dim) each
        self.mask = mask  # ids a draft may name (the sampler's mask)
        self.undo: tuple[Mark, torch.Tensor] | None = None  # last verify: mark, logits before d
        self.drafted = 0
        self.accepted = 0
        self.steps = 0  # decode steps of this request
        self.fed = 0  # positions the last draft fed to the block

    def keep(self, start: int, h: torch.Tensor) -> None:
        """The trunk's streams h (T, hc, dim) of positions start … start+T-1. Only the last
        window matters to a draft (the block is window-only); a gap (a restored prefix, never
        run here) restarts the window there."""
        if self.state.pos + len(self.rows) != start:
            self.rows, self.state.pos = [], start
        self.rows.extend(h.split(1))
        extra = len(self.rows) - self.window
        if extra > 0:
            del self.rows[:extra]
            self.state.pos += extra

    def draft(self, next_ids: list[int]) -> int:
        """Feed the kept streams with ``next_ids`` (model ids of the token after each of them,
        the last being the token just sampled) and return the drafted id after that one."""
        with torch.inference_mode(), rows_as_batch():  # a draft's bits decide nothing
            h = torch.cat(self.rows)
            self.fed = h.size(0)
            logits = self.model.mtp_forward(h, next_ids, self.state, last_only=True)[-1]
            if self.mask is not None:
                logits = logits.masked_fill(~self.mask[: logits.numel()], float("-inf"))
        self.rows = []
        self.drafted += 1
        return int(torch.argmax(logits))


class Speculator:
    """A bundled engine's decode steps for requests with a :class:`Drafter`: each step is a
    plain one or a speculative one (by ``mode`` and :class:`Pace`)."""

    def __init__(self, engine: BundledEngine, mode: str) -> None:
        self.engine = engine
        self.mode = mode
        self.pace = Pace()  # what a plain and a speculative step cost here
        self.every = PROBE  # steps between drafting probes while drafting does not pay

    def step(self, run: _Run, drafter: Drafter, sampler: Sampler, unfed: tuple[int, int],
             budget: int) -> list[int]:
        """Feed ``unfed`` (V4 id, model id), sample the next token, or two when a draft holds
        (at most ``budget``). Runs in the worker thread."""
        run.state.release()  # the last verified draft stays for good now
        drafter.undo = None
        drafter.steps += 1
        chosen = self.mode == "on" or self.pace.pays()
        probe = self.mode == "auto" and drafter.steps % (PROBE if chosen else self.every) < 2
        draft = chosen != probe  # a probe keeps the kind not chosen measured (twice: below)
        t0 = time.perf_counter()
        if budget < 2 or not drafter.rows or not draft:  # a plain step, streams kept
            self.engine._advance(run, [unfed[0]], [unfed[1]], hidden=True)
            token = sampler(run.logits)
            self.pace.plain(time.perf_counter() - t0)
            return [token]
        tokens = self.speculate(run, drafter, sampler, unfed)
        # a draft that first caught the block up on many positions (after a prefill or plain
        # steps) costs more than a decode step's: its time is not a step's
        self.pace.speculative(time.perf_counter() - t0 if drafter.fed <= 2 else None,
                              len(tokens) == 2)
        if probe and drafter.steps % self.every == 1:  # a drafting probe's verdict
            self.every = PROBE if self.pace.pays() else min(2 * self.every, PROBE_MAX)
        return tokens

    def speculate(self, run: _Run, drafter: Drafter, sampler: Sampler,
                  unfed: tuple[int, int]) -> list[int]:
        """Draft the token after ``unfed``, verify both in one trunk pass; one token, or two
        when the draft holds."""
        engine, model = self.engine, self.engine.transformer
        with engine._forward_lock:
            draft = drafter.draft([*engine.vocab.to_model(run.ids[drafter.state.pos + 1:]),
                                   unfed[1]])
            mark = run.state.mark(2)
            h = model.streams(torch.tensor([unfed[1], draft], dtype=torch.int64), run.state)
            with torch.inference_mode():
                logits = model.logits(h)  # each row as a one-token forward has it
            engine.forward_passes += 1
        run.ids.append(unfed[0])
        token = sampler(logits[0])
        if token != draft:  # the trunk forgets the draft: as if only ``unfed`` was fed
            run.state.rollback(mark, mark.pos + 1)
            run.state.release()
            run.logits = logits[0]
            drafter.keep(mark.pos, h[:1])
            return [token]
        drafter.accepted += 1
        run.ids.append(engine.vocab.to_v4([draft])[0])
        run.logits = logits[1]
        drafter.keep(mark.pos, h)
        drafter.undo = (mark, logits[0])  # in case the stream stops at the draft
        return [token, sampler(logits[1])]

    def settle(self, run: _Run, unshown: int) -> None:
        """After a speculative stream: when it stopped at a verified draft (its successor
        sampled but not shown), forget the draft, so that the state holds every token but
        the last shown one, as plain decoding leaves it."""
        drafter = run.drafter
        if unshown and drafter is not None and drafter.undo is not None:
            mark, logits = drafter.undo
            run.state.rollback(mark, run.state.pos - 1)
            run.ids.pop()
            run.logits = logits
        run.state.release()


__all__ = ["ENV", "MODES", "PROBE", "PROBE_MAX", "Drafter", "Pace", "Speculator", "mode_from"]
