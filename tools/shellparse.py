"""A shell command, parsed: every simple command it would run, with wrappers seen through.

The shell policy decides on what bash would execute, never on the text: the command is parsed
with tree-sitter-bash (the grammar editors use, maintained with tree-sitter itself; bashlex was
last released in 2023 and cannot parse ``case`` or arithmetic), and every simple command is
collected from wherever it sits: pipelines, lists, ``$(…)``, backquotes, ``<(…)``, subshells,
groups, ``if``/``for``/``while``/``case``, function bodies, ``${x:-$(…)}``, here-documents.

Words are evaluated statically (quotes and backslashes removed: ``\\touch``, ``'to'uch`` and
``touch`` are one program); a word whose value depends on the run (``$t``, ``$(…)``, brace
expansion, a glob in a program name) makes its command *dynamic*. Programs are resolved through
``PATH`` (``/usr/bin/touch`` is ``touch``). Wrappers (``env``, ``command``, ``nice``, ``nohup``,
``timeout``, ``stdbuf``, ``sudo``, ``xargs``, ``find -exec``, ``sh -c STRING``, ``eval``, …) are
seen through: the command they run is collected as well. A program that runs code this parse
cannot see (``python -c``, ``awk`` with ``system``, ``git -c``, ``source``, a shell reading
stdin, …) is marked ``executes``: such a command never runs without a decision by a person.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from whalebone.tools.shellprograms import ARGS_RUN, DANGEROUS_VARS, PY_VERSIONED, base, inspect

MAX_DEPTH = 6  # nested ``sh -c`` / ``eval`` strings parsed before giving up (undecidable)

_BRACE = re.compile(r"\{[^{}]*(,|\.\.)[^{}]*\}")
_GLOB = re.compile(r"[*?\[]")
_WRITE_OPS = {">", ">>", ">|", "&>", "&>>", "<>", ">&"}
_HARMLESS_TARGETS = {"/dev/null", "/dev/stdout", "/dev/stderr"}

UNKNOWN = "\x00"  # an argument known only at run time


@dataclass
class Simple:
    """One simple command as it would run."""

    argv: list[str]  # static words, the program resolved through PATH ([] when dynamic)
    text: str  # the source text (for messages)
    dynamic: str | None = None  # why its words cannot be known before it runs
    executes: str | None = None  # why it runs code this parse cannot see
    wrapper: bool = False  # a see-through wrapper: its inner command is listed too
    privileged: bool = False  # sudo and kin: matched as themselves as well as what they run
    tail_unknown: bool = False  # arguments are appended at run time (xargs, find -exec)
    literal_program: str = ""  # the program word as written, before PATH resolution

    @property
    def program(self) -> str:
        return self.argv[0] if self.argv else ""


@dataclass
class Parsed:
    """Everything a command would run, and what about it cannot be decided statically."""

    commands: list[Simple] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # unparseable or undecidable parts
    writes: list[str] = field(default_factory=list)  # files it redirects output into


@cache
def _parser() -> Any:
    import tree_sitter_bash
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_bash.language()))


def parse(command: str, path: str | None = None) -> Parsed:
    """Every simple command in ``command`` (``path``: the PATH programs resolve through)."""
    out = Parsed()
    _parse_into(command, out, path if path is not None else os.environ.get("PATH", ""), 0)
    return out


def _parse_into(command: str, out: Parsed, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        out.problems.append("shell strings nested too deeply to decide")
        return
    if "\0" in command:
        out.problems.append("a NUL byte in the command")
        return
    tree = _parser().parse(command.encode("utf-8", "surrogateescape"))
    if tree.root_node.has_error:
        out.problems.append("the command cannot be parsed as shell")
        # the parts that did parse are still checked, so a deny still wins
    _Walker(out, path, depth).walk(tree.root_node)
    if "\\\n" in command:
        # bash joins a backslash-newline into the word (tou\<newline>ch is touch), the grammar
        # splits there: check the joined reading too (both readings must pass).
        _parse_into(command.replace("\\\n", ""), out, path, depth)


class _Walker:
    def __init__(self, out: Parsed, path: str, depth: int) -> None:
        self.out, self.path, self.depth = out, path, depth

    def walk(self, root: Any) -> None:
        stack = [root]
        while stack:
            node = stack.pop()
            kind = node.type
            if kind == "command":
                self.command(node)
            elif kind == "variable_assignment":
                self.assignment(node)
            elif kind == "file_redirect":
                self.redirect(node)
            elif kind == "heredoc_redirect" and node.child_count and _quoted_heredoc(node):
                continue  # <<'EOF': the body is literal text, nothing in it runs
            stack.extend(reversed(node.children))

    def assignment(self, node: Any) -> None:
        name = node.child_by_field_name("name")
        if name is not None and DANGEROUS_VARS.match(_text(name).split("[")[0]):
            self.out.problems.append(f"it sets {_text(name)}, which changes what runs")

    def redirect(self, node: Any) -> None:
        ops = {c.type for c in node.children if not c.is_named}
        if not ops & _WRITE_OPS:
            return
        dest = node.child_by_field_name("destination")
        target = _static(dest) if dest is not None else None
        if target is None:
            self.out.writes.append("a file named at run time")
        elif target not in _HARMLESS_TARGETS and not target.isdigit() and target != "-":
            self.out.writes.append(target)

    def command(self, node: Any) -> None:
        name = node.child_by_field_name("name")
        words = [name, *node.children_by_field_name("argument")] if name else []
        text = _text(node)
        if not words:
            return
        values = [_static(w) for w in words]
        program = values[0]
        if program is None or (_GLOB.search(program) and _unquoted(words[0])):
            self.out.commands.append(Simple([], text, dynamic="the program is known only at "
                                            "run time (a variable, substitution, expansion or "
                                            "glob)"))
            return
        name = base(resolve(program, self.path))
        if any(v is None for v in values) and (name in ARGS_RUN or PY_VERSIONED.match(name)):
            self.out.commands.append(Simple([], text, dynamic="what it runs depends on words "
                                            "known only at run time"))
            return
        # Elsewhere a word known only at run time is data: it stands as UNKNOWN, which only a
        # ``*`` matches, and any deny pattern for the program counts as matching it.
        argv = [UNKNOWN if v is None else v for v in values]
        self.simple(argv, text, tail_unknown=False)

    def simple(self, argv: list[str], text: str, *, tail_unknown: bool) -> None:
        """Record ``argv`` and whatever it runs in turn."""
        literal = argv[0]
        argv = [resolve(argv[0], self.path), *argv[1:]]
        cmd = Simple(argv, text, tail_unknown=tail_unknown, literal_program=literal)
        self.out.commands.append(cmd)
        inspect(cmd, self)

    def nested(self, argv: list[str], text: str, *, tail_unknown: bool = False) -> None:
        if not argv:
            return
        if _GLOB.search(argv[0]) or "$" in argv[0]:
            self.out.commands.append(Simple([], text, dynamic="the program is known only at "
                                            "run time"))
            return
        self.simple(argv, text, tail_unknown=tail_unknown)

    def string(self, code: str) -> None:
        """A string a shell will run (``sh -c``, ``eval``, ``trap``): parsed in its turn."""
        _parse_into(code, self.out, self.path, self.depth + 1)


def resolve(program: str, path: str) -> str:
    """``program`` as the policy names it: a path to the program PATH finds under the same
    name is that name (``/usr/bin/touch`` is ``touch``); any other path stays a path."""
    if "/" not in program:
        return program
    base = posixpath.basename(program)
    if not base:
        return program
    found = shutil.which(base, path=path)
    try:
        if found and os.path.samefile(os.path.realpath(found), os.path.realpath(program)):
            return base
    except OSError:
        pass
    return program


def _text(node: Any) -> str:
    return bytes(node.text).decode("utf-8", "surrogateescape")


def _unquoted(node: Any) -> bool:
    return node.type in ("word", "command_name") and not any(
        c.type in ("string", "raw_string") for c in node.children)


def _quoted_heredoc(node: Any) -> bool:
    start = next((c for c in node.children if c.type == "heredoc_start"), None)
    return start is not None and any(q in _text(start) for q in "'\"\\")


_ESCAPE = re.compile(r"\\(.)", re.S)
_DQ_ESCAPE = re.compile(r"\\([$`\"\\\n])")


def _static(node: Any) -> str | None:
    """The value of a word that cannot change at run time, or None."""
    kind = node.type
    if kind == "command_name":
        return _static(node.children[0]) if node.child_count == 1 else None
    if kind in ("word", "number"):
        raw = _text(node)
        if _BRACE.search(raw):
            return None
        return _ESCAPE.sub(lambda m: "" if m.group(1) == "\n" else m.group(1), raw)
    if kind == "raw_string":
        return _text(node)[1:-1]
    if kind == "string":
        if any(c.is_named and c.type != "string_content" for c in node.children):
            return None
        return _DQ_ESCAPE.sub(lambda m: "" if m.group(1) == "\n" else m.group(1),
                              _text(node)[1:-1])
    if kind == "concatenation":
        raw = "".join(_text(c) for c in node.children if c.type == "word")
        if _BRACE.search(raw):
            return None
        parts = [_static(c) for c in node.children]
        return None if any(p is None for p in parts) else "".join(p for p in parts if p)
    return None  # expansions, substitutions, $'…', arithmetic: known only at run time
