"""Training conversations rendered by whalebone itself: the real agent loop, tools and codec.

Each :class:`~whalebone.training.tasks.Task` is run through :class:`whalebone.agent.Agent`
with a :class:`~whalebone.engine.scripted.ScriptedEngine` that plays the task's oracle turns
(written with :func:`whalebone.dsml.emit_completion`), real tools in a temporary workspace, a
real session store and, for the memory family, a real memory scope shared by both sessions. The
prompts the engine receives are therefore exactly the bytes the runtime renders; the training
text of a session is its last prompt plus its last completion, and the loss mask covers every
span the engine produced (the assistant turns), nothing the loop or the tools wrote.

The auditor family is rendered by :class:`whalebone.budget.auditor.Auditor` itself.

An :class:`Example` keeps the shared head (system prompt and tool list, the same for every
example of a group) apart from the rest, so training computes the head once per step.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio

from whalebone.core.errors import WhaleboneError
from whalebone.dsml import tokens as T
from whalebone.dsml.emit import emit_completion
from whalebone.training.tasks import TRAIN_FAMILIES, Step, Task, make_tasks

TRAIN_SEED = 1  # train tasks come from seeds >= 1; the held-out split is seed 0
HELD_OUT_SEED = 0
MEMORY_SCOPES = ("project:notes", "user:me", "project:home", "team:ops")
_DATE = re.compile(r"\[today is \d{4}-\d{2}-\d{2}\]")


class DataError(WhaleboneError):
    """The oracle's conversation did not run the way the task says (a generator bug)."""


@dataclass
class Example:
    family: str
    head: str  # the system part, up to the first user turn (shared by a group)
    pieces: list[tuple[str, bool]]  # the rest, cut at turn boundaries; True = assistant wrote it

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Example:
        d = json.loads(line)
        return cls(d["family"], d["head"], [(t, bool(a)) for t, a in d["pieces"]])


def completion(step: Step) -> str:
    return emit_completion(step.answer, reasoning=step.reasoning, tool_calls=step.calls)


def nano_tools(workspace: str | Path) -> Any:
    """The tool set the nano agent is trained with: the built-ins plus the calculator."""
    from whalebone.agent.tools import default_tools

    return default_tools(workspace)


def write_workspace(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def split(prompt: str, turns: list[tuple[str, str]]) -> tuple[str, list[tuple[str, bool]]]:
    """The head and the pieces of ``prompt + last completion``; ``turns`` are the engine's
    (prompt, completion) pairs in order, each prompt extending the last byte for byte."""
    text = turns[-1][0] + turns[-1][1]
    cut = text.index(T.USER)
    pieces: list[tuple[str, bool]] = []
    at = cut
    for p, c in turns:
        if not (text.startswith(p) and text.startswith(c, len(p))):
            raise DataError("a later prompt does not extend an earlier turn")
        pieces.append((text[at:len(p)], False))
        pieces.append((c, True))
        at = len(p) + len(c)
    return text[:cut], pieces


async def render_task(task: Task, scratch: Path, rng: random.Random) -> list[Example]:
    """Run ``task``'s oracle through the real loop; one example per session."""
    from whalebone.agent.agent import Agent
    from whalebone.agent.config import AgentConfig
    from whalebone.agent.events import Done, ToolFinished
    from whalebone.agent.store import SessionStore
    from whalebone.engine.scripted import ScriptedEngine

    if task.case is not None:
        return [render_audit(task)]
    ws = Path(tempfile.mkdtemp(dir=scratch))
    write_workspace(ws, task.files)
    memory = None
    if task.family == "memory":
        from whalebone.memory import MemoryHome

        memory = MemoryHome(ws / ".home")
        scope = rng.choice(MEMORY_SCOPES)
    out = []
    for user, steps in zip(task.sessions, task.steps, strict=True):
        script = [completion(s) for s in steps]
        engine = ScriptedEngine(script)
        agent = Agent(engine, tools=nano_tools(ws), store=SessionStore(":memory:"),
                      config=AgentConfig(max_steps=len(steps)),
                      memory=None if memory is None else memory.attach(scope))
        done = None
        async for event in agent.stream(user):
            if isinstance(event, ToolFinished) and event.is_error:
                raise DataError(f"{task.family}: tool {event.name} failed: {event.content}")
            if isinstance(event, Done):
                done = event
        if done is None or done.reason != "answer" or done.answer != steps[-1].answer:
            raise DataError(f"{task.family}: the oracle run ended {done!r}")
        turns = [(r.prompt or "", c) for r, c in zip(engine.requests, script, strict=True)]
        head, pieces = split(turns[-1][0], turns)
        date = f"[today is 2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}]"
        pieces = [(_DATE.sub(date, t) if not mine else t, mine) for t, mine in pieces]
        out.append(Example(task.family, head, pieces))
    return out


def render_audit(task: Task) -> Example:
    from whalebone.budget.auditor import Auditor
    from whalebone.engine.scripted import ScriptedEngine
    from whalebone.training.audit import request_of

    assert task.case is not None
    request = request_of(task.case)
    auditor = Auditor(ScriptedEngine([]))  # rendering and reading call no engine
    prompt = auditor.generation_request(request, 256).prompt or ""
    text = completion(task.steps[0][0])
    verdict = auditor.read(text, request.max_step)
    want = task.steps[0][0].calls[0][1]["decision"]
    if verdict.decision != want or verdict.cause != "ok":
        raise DataError(f"the auditor reads the oracle's answer as {verdict!r}")
    head, pieces = split(prompt, [(prompt, text)])
    return Example("auditor", head, pieces)


def task_key(task: Task) -> str:
    """What makes two tasks the same: the user messages and the workspace."""
    return json.dumps([task.sessions, sorted(task.files.items())], ensure_ascii=False)


def held_out_keys(per_family: int) -> set[str]:
    """Every task of the held-out split (kept out of training)."""
    return {task_key(t) for f in TRAIN_FAMILIES if f != "auditor"
            for t in make_tasks(f, per_family, HELD_OUT_SEED)}


def build(per_family: int, *, held_out: int = 50, seed: int = TRAIN_SEED,
          families: tuple[str, ...] = TRAIN_FAMILIES) -> list[Example]:
    """Render ``per_family`` train tasks of each family (the memory family gives two examples
    per task), skipping any task of the held-out split (same messages and workspace)."""
    if seed == HELD_OUT_SEED:
        raise DataError(f"seed {HELD_OUT_SEED} is the held-out split")
    banned = held_out_keys(held_out)
    rng = random.Random(seed)
    examples: list[Example] = []

    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="whalebone-nano-") as tmp:
            for family in families:
                for task in make_tasks(family, per_family, seed):
                    if task_key(task) in banned:
                        continue
                    examples.extend(await render_task(task, Path(tmp), rng))

    anyio.run(main)
    return examples


def save(examples: list[Example], path: Path) -> None:
    """JSONL, gzipped when the name ends in ``.gz`` (every example repeats its ~5 KB head:
    17K examples are ~100 MB plain, a few MB gzipped, small enough to carry to a GPU)."""
    text = "".join(e.to_json() + "\n" for e in examples).encode("utf-8")
    path.write_bytes(gzip.compress(text, mtime=0) if path.suffix == ".gz" else text)


def load(path: Path) -> list[Example]:
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")
    return [Example.from_json(line) for line in text.splitlines()]


def _build_job(job: tuple[str, int, int, int]) -> list[str]:
    family, n, seed, held_out = job
    return [e.to_json() for e in build(n, held_out=held_out, seed=seed, families=(family,))]


def build_parallel(per_family: int, *, held_out: int = 50, workers: int = 2,
                   chunk: int = 100) -> list[Example]:
    """:func:`build` in ``workers`` processes, in chunks of ``chunk`` tasks with seeds 1, 2, …
    (deterministic: the result does not depend on ``workers``)."""
    import multiprocessing

    jobs = [(f, min(chunk, per_family - i * chunk), TRAIN_SEED + i, held_out)
            for f in TRAIN_FAMILIES for i in range(-(-per_family // chunk))]
    if workers <= 1:
        done = [_build_job(j) for j in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            done = pool.map(_build_job, jobs, chunksize=1)
    return [Example.from_json(line) for lines in done for line in lines]
