"""The task families whalebone-nano is taught, as seeded task specs with their oracle answers.

A :class:`Task` is everything one conversation needs: the user messages (one per session; the
memory family has two sessions, remember then recall), the workspace files, the tool calls a
good agent makes and the answer it gives. The same spec serves twice: rendered through the real
agent loop with a scripted oracle it becomes training data (:mod:`whalebone.training.data`);
run through the real loop with the bundled engine it is an evaluation case
(``bench/nano_eval.py``), checked against the same expectations.

``make_tasks(family, n, seed)`` is deterministic: the train split and the held-out split use
disjoint seeds, and a train task identical to a held-out one (same messages, same workspace) is
dropped (:func:`whalebone.training.data.build`), so nothing the bench runs was trained on.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from whalebone.tools.calculator import calculator

FAMILIES = ("arithmetic", "read_file", "list_dir", "write_file", "memory", "chat", "auditor")
# Trained on, not scored: repeating the user's text exactly. Every answer token is a copy, which
# is what a small model learns slowest from the other families (a few copied tokens each).
AUX_FAMILIES = ("echo",)
TRAIN_FAMILIES = FAMILIES + AUX_FAMILIES


@dataclass
class Step:
    """One assistant turn: short reasoning, then either tool calls or the final answer."""

    reasoning: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    answer: str = ""


@dataclass
class Task:
    family: str
    sessions: list[str]  # one user message per session
    steps: list[list[Step]]  # the oracle's turns, per session
    files: dict[str, str] = field(default_factory=dict)  # workspace files, relative path -> text
    expect_answer: list[str] = field(default_factory=list)  # substrings of each session's answer
    expect_files: dict[str, str] = field(default_factory=dict)  # files the run must leave
    case: dict[str, Any] | None = None  # auditor: the budget case; sessions/steps unused

    @property
    def expected_calls(self) -> list[tuple[str, dict[str, Any]]]:
        return [c for session in self.steps for s in session for c in s.calls]


WORDS = ("apple amber anchor arrow aspen atlas badge basil beacon birch blossom bramble breeze "
         "canyon cedar cobalt comet coral cotton crystal dahlia delta dune ember falcon fern "
         "fjord flint garnet glacier granite harbor hazel heron indigo iris ivory jade jasper "
         "juniper kestrel lagoon lantern lemon lilac linen lotus maple marble meadow mint "
         "nectar nova oak olive onyx opal orchid otter pebble pepper pine plum quartz raven "
         "reef ripple river saffron sage sierra silver slate spruce stone summit thistle "
         "thunder tulip velvet violet walnut willow winter zephyr").split()
NAMES = ("Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Karl Laura Mallory Nina Oscar "
         "Peggy Quinn Rupert Sybil Trent Uma Victor Wendy Xavier Yara Zane").split()
EXTS = ("txt", "md", "log", "ini", "csv", "py", "json")
DIRS = ("docs", "notes", "src", "data", "logs", "config", "reports", "drafts")


def _word(rng: random.Random) -> str:
    return rng.choice(WORDS)


def _fname(rng: random.Random) -> str:
    return f"{_word(rng)}{rng.choice(['', '_' + _word(rng)])}.{rng.choice(EXTS)}"


def _line(rng: random.Random) -> str:
    forms = [
        lambda: f"the {_word(rng)} code is {rng.randint(10, 9999)}",
        lambda: f"meeting with {rng.choice(NAMES)} at {rng.randint(1, 12)}pm in room "
                f"{rng.randint(1, 99)}",
        lambda: f"{_word(rng)} = {rng.randint(0, 500)}",
        lambda: f"{rng.choice(NAMES)} owns the {_word(rng)} project",
        lambda: f"remember to water the {_word(rng)}",
        lambda: f"status: {rng.choice(['ok', 'done', 'pending', 'failed'])}",
        lambda: f"{_word(rng)} {_word(rng)} {_word(rng)}",
        lambda: f"version {rng.randint(0, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
    ]
    return rng.choice(forms)()


# -- 1. arithmetic ---------------------------------------------------------------------------

_OPS = {"+": ["plus", "+"], "-": ["minus", "-"], "*": ["times", "*", "multiplied by"],
        "/": ["divided by", "/"]}


def arithmetic(rng: random.Random) -> Task:
    op = rng.choice("+-*/")
    a, b = rng.randint(2, 999), rng.randint(2, 99 if op in "*/" else 999)
    if op == "/":
        a = b * rng.randint(2, 99)  # exact division: the answer is an integer
    spoken = rng.choice(_OPS[op])
    tight = spoken in "+-*/" and rng.random() < 0.5
    said = f"{a}{spoken}{b}" if tight else f"{a} {spoken} {b}"
    expr = f"{a} {op} {b}"
    if rng.random() < 0.25:  # a three-term expression with parentheses
        c, op2 = rng.randint(2, 50), rng.choice("+-*")
        expr = f"({a} {op} {b}) {op2} {c}"
        said = f"({said}) {op2} {c}"
    result = calculator(expr)
    ask = rng.choice(["what is {e}?", "What is {e}?", "What's {e}?", "Compute {e}.",
                      "Calculate {e}", "calculate {e}", "How much is {e}?", "{e} = ?",
                      "Please work out {e}.", "Use the calculator: {e}", "what's {e}"])
    return Task("arithmetic", [ask.format(e=said)], [[
        Step("Arithmetic: use the calculator.", [("calculator", {"expression": expr})]),
        Step(f"The calculator says {result}.", answer=f"{expr} = {result}"),
    ]], expect_answer=[result])


# -- 2. reading a file -----------------------------------------------------------------------

def _workspace(rng: random.Random, extra: int) -> dict[str, str]:
    files: dict[str, str] = {}
    for _ in range(extra):
        name = _fname(rng)
        if rng.random() < 0.3:
            name = f"{rng.choice(DIRS)}/{name}"
        files[name] = "\n".join(_line(rng) for _ in range(rng.randint(1, 3))) + "\n"
    return files


def read_file(rng: random.Random) -> Task:
    files = _workspace(rng, rng.randint(0, 3))
    path = _fname(rng)
    if rng.random() < 0.35:
        path = f"{rng.choice(DIRS)}/{path}"
    lines = [_line(rng) for _ in range(rng.randint(1, 3))]
    files[path] = "\n".join(lines) + "\n"
    ask = rng.choice(["What does {p} say?", "What is in {p}?", "Read {p} and tell me what it "
                      "says.", "Show me the contents of {p}.", "Quote {p}.", "what's in {p}?",
                      "Open {p} and quote it.", "Tell me what {p} contains."])
    quoted = "\n".join(lines)
    return Task("read_file", [ask.format(p=path)], [[
        Step(f"Read {path}.", [("read_file", {"path": path})]),
        Step("Quote it.", answer=f"{path} says:\n{quoted}"),
    ]], files=files, expect_answer=lines)


# -- 3. listing a directory ------------------------------------------------------------------

def list_dir(rng: random.Random) -> Task:
    where = rng.choice([".", ".", rng.choice(DIRS)])
    files = _workspace(rng, rng.randint(0, 2))
    if where != ".":
        files = {k: v for k, v in files.items() if not k.startswith(where + "/")}
    for _ in range(rng.randint(1, 4)):
        name = _fname(rng)
        files[name if where == "." else f"{where}/{name}"] = _line(rng) + "\n"
    if where != "." and rng.random() < 0.3:
        files[f"{where}/{rng.choice(DIRS)}/{_fname(rng)}"] = _line(rng) + "\n"
    entries = listing(files, where)
    if where == ".":
        ask = rng.choice(["What files are in the workspace?", "List the current directory.",
                          "What is in this folder?", "list the files here",
                          "Which files are in the current directory?", "Show me the files."])
    else:
        ask = rng.choice(["What files are in {d}?", "List the {d} directory.",
                          "What is inside {d}/?", "Which files does the {d} folder have?",
                          "list {d}", "Show me what is in {d}."]).format(d=where)
    shown = "the workspace" if where == "." else where
    return Task("list_dir", [ask], [[
        Step(f"List {shown}.", [("list_dir", {"path": where})]),
        Step("Report the entries.", answer=f"{shown} contains: {', '.join(entries)}"),
    ]], files=files, expect_answer=entries)


def listing(files: dict[str, str], where: str) -> list[str]:
    """The names list_dir shows for ``where`` (depth 1): files, and directories with a slash,
    in the tool's order (checked against the real tool when data is rendered)."""
    prefix = "" if where == "." else where + "/"
    names: set[str] = set()
    for path in files:
        if path.startswith(prefix):
            rest = path[len(prefix):]
            names.add(rest.split("/")[0] + "/" if "/" in rest else rest)
    return sorted(names)


# -- 4. writing a file -----------------------------------------------------------------------

def write_file(rng: random.Random) -> Task:
    path = _fname(rng)
    if rng.random() < 0.25:
        path = f"{rng.choice(DIRS)}/{path}"
    content = _line(rng)
    ask = rng.choice(["Write '{c}' to {p}.", "Create a file {p} containing: {c}",
                      "Save the text \"{c}\" in {p}.", "Put '{c}' into a new file called {p}.",
                      "write {c} to {p}", "Make a file named {p} with the text: {c}"])
    return Task("write_file", [ask.format(c=content, p=path)], [[
        Step(f"Write {path}.", [("write_file", {"path": path, "content": content})]),
        Step("Confirm.", answer=f"Saved to {path}."),
    ]], files=_workspace(rng, rng.randint(0, 2)), expect_answer=[path],
        expect_files={path: content})


# -- 5. memory -------------------------------------------------------------------------------

_FACTS = [  # subject, values
    ("wifi password", lambda r: f"{_word(r)}{r.randint(10, 99)}"),
    ("favourite colour", lambda r: r.choice(["green", "blue", "red", "amber", "teal", "violet",
                                            "orange", "black", "white", "indigo"])),
    ("dog's name", lambda r: r.choice(NAMES)),
    ("cat's name", lambda r: r.choice(NAMES)),
    ("deploy day", lambda r: r.choice(["Monday", "Tuesday", "Wednesday", "Thursday",
                                       "Friday"])),
    ("team lead", lambda r: r.choice(NAMES)),
    ("office room", lambda r: str(r.randint(100, 999))),
    ("build server", lambda r: f"{_word(r)}-{r.randint(1, 9)}"),
    ("lucky number", lambda r: str(r.randint(1, 99))),
    ("project codename", lambda r: _word(r).capitalize()),
    ("dentist appointment", lambda r: f"{r.choice(['Monday', 'Friday', 'Tuesday'])} at "
                                      f"{r.randint(8, 17)}:00"),
    ("parking spot", lambda r: f"{r.choice('ABCDE')}{r.randint(1, 40)}"),
]


def memory(rng: random.Random) -> Task:
    subject, value_of = rng.choice(_FACTS)
    value = value_of(rng)
    owner = rng.choice(["my", "the"])
    fact = f"{owner} {subject} is {value}"
    slug = re.sub(r"[^a-z0-9]+", "-", subject.replace("'", "")).strip("-")
    path = f"/memories/{slug}.md"
    stored = fact[0].upper() + fact[1:] + "."
    tell = rng.choice(["Remember that {f}.", "Please remember: {f}.", "Note for later: {f}.",
                       "remember {f}", "Keep in mind that {f}."]).format(f=fact)
    ask = rng.choice(["What is {o} {s}?", "Do you remember {o} {s}?", "what's {o} {s}?",
                      "What did I tell you about {o} {s}?", "Remind me of {o} {s}."]).format(
        o=owner, s=subject)
    return Task("memory", [tell, ask], [
        [Step("Store it in memory.", [("memory", {"command": "create", "path": path,
                                                  "file_text": stored})]),
         Step("Stored.", answer=f"I will remember that {fact}.")],
        [Step("Search memory.", [("memory", {"command": "search", "query": subject})]),
         Step("Found it.", answer=stored)],
    ], expect_answer=[value])


# -- 6. plain conversation -------------------------------------------------------------------

_CHAT = [
    (["Hello!", "hi", "Hi there", "Hey!", "Good morning", "hello", "Hey there!", "Hi!"],
     "Hello! What can I do for you?"),
    (["Thanks!", "thank you", "Thanks a lot.", "thx", "Thank you very much!", "Cheers!"],
     "You're welcome."),
    (["Who are you?", "who are you", "What are you?", "What is your name?", "Introduce "
      "yourself."], "I am whalebone, an agent that completes tasks by calling tools."),
    (["What can you do?", "what can you do", "How can you help me?", "What are you good "
      "at?", "What tools do you have?"],
     "I can read, write and list files, do arithmetic with a calculator, and remember facts."),
    (["Goodbye", "bye", "See you later!", "Bye!", "good night"], "Goodbye!"),
    (["How are you?", "how are you doing?", "How's it going?", "Are you ok?"],
     "I'm ready to help. What do you need?"),
    (["Are you a human?", "are you human?", "Is this a person?", "Am I talking to a bot?"],
     "No, I am whalebone, a small language model agent."),
]


def chat(rng: random.Random) -> Task:
    asks, reply = rng.choice(_CHAT)
    ask = rng.choice(asks)
    if rng.random() < 0.3:
        name = rng.choice(NAMES)
        ask = f"{ask} I'm {name}." if ask[-1] in ".!?" else f"{ask}, {name}"
    return Task("chat", [ask], [[Step("No tool is needed.", answer=reply)]],
                expect_answer=[reply])


# -- auxiliary: echo ------------------------------------------------------------------------

def _item(rng: random.Random) -> str:
    forms = [
        lambda: str(rng.randint(0, 9999)),
        lambda: str(rng.randint(10, 999)),
        lambda: _word(rng),
        lambda: rng.choice(NAMES),
        lambda: _fname(rng),
        lambda: f"{rng.choice(DIRS)}/{_fname(rng)}",
        lambda: f"{rng.randint(2, 999)} {rng.choice('+-*/')} {rng.randint(2, 99)}",
        lambda: _line(rng),
    ]
    return rng.choice(forms)()


def _easy_item(rng: random.Random) -> str:
    return rng.choice([_word(rng), rng.choice(NAMES), str(rng.randint(0, 99)), rng.choice(DIRS)])


def echo(rng: random.Random, easy: bool = False) -> Task:
    """Repeat the user's text. ``easy``: short common items only (a curriculum warm-up: copying
    found by content appears sooner over a small vocabulary, see :mod:`.probe`)."""
    item = _easy_item if easy else _item
    text = rng.choice([" ", ", ", "; ", "\n"]).join(item(rng) for _ in range(rng.randint(3, 12)))
    ask = rng.choice(["Repeat after me: {t}", "Say exactly this: {t}", "Echo this back:\n{t}",
                      "Copy this text exactly: {t}", "repeat {t}", "Please repeat: {t}"])
    return Task("echo_easy" if easy else "echo", [ask.format(t=text)],
                [[Step("Repeat it.", answer=text)]], expect_answer=[text])


MAKERS = {"arithmetic": arithmetic, "read_file": read_file, "list_dir": list_dir,
          "write_file": write_file, "memory": memory, "chat": chat, "echo": echo,
          "echo_easy": lambda rng: echo(rng, easy=True)}


def make_tasks(family: str, n: int, seed: int) -> list[Task]:
    """``n`` tasks of ``family`` from ``seed`` (the auditor family lives in
    :mod:`whalebone.training.audit`)."""
    if family == "auditor":
        from whalebone.training.audit import audit_tasks

        return audit_tasks(n, seed)
    rng = random.Random(f"{family}:{seed}")
    return [MAKERS[family](rng) for _ in range(n)]
