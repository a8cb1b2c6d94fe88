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

MAX_DEPTH = 6  # nested ``sh -c`` / ``eval`` strings parsed before giving up (undecidable)

# Assignments that change what later words mean or which program runs.
_DANGEROUS_VARS = re.compile(
    r"^(PATH|IFS|ENV|BASH_ENV|CDPATH|GLOBIGNORE|PROMPT_COMMAND|SHELLOPTS|BASHOPTS|LD_\w*|"
    r"\w*_PRELOAD|PYTHON\w*|PERL5\w*|PERLLIB|RUBYOPT|RUBYLIB|NODE_OPTIONS|NODE_PATH|GIT_\w*|"
    r"BASH_FUNC\w*|EDITOR|VISUAL|PAGER|GCONV_PATH|HOSTALIASES)$")
_BRACE = re.compile(r"\{[^{}]*(,|\.\.)[^{}]*\}")
_GLOB = re.compile(r"[*?\[]")
_WRITE_OPS = {">", ">>", ">|", "&>", "&>>", "<>"}
_HARMLESS_TARGETS = {"/dev/null", "/dev/stdout", "/dev/stderr"}

SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "fish", "tcsh", "csh"}
# interpreter -> options whose value is code it runs
INTERPRETERS: dict[str, set[str]] = {
    **{n: {"-c"} for n in ("python", "python2", "python3", "pypy", "pypy3")},
    "perl": {"-e", "-E"}, "ruby": {"-e"}, "node": {"-e", "--eval", "-p", "--print"},
    "nodejs": {"-e", "--eval", "-p", "--print"}, "deno": {"eval"}, "bun": {"-e", "--eval"},
    "php": {"-r"}, "lua": {"-e"}, "luajit": {"-e"}, "Rscript": {"-e"}, "R": {"-e"},
    "osascript": {"-e"}, "pwsh": {"-c", "-Command"}, "tclsh": set(), "expect": {"-c"},
    "julia": {"-e", "--eval"}, "gdb": {"-ex", "--eval-command"},
}
_PY_VERSIONED = re.compile(r"^(python|pypy)\d+(\.\d+)*$")
# Known git commands; anything else may be an alias or an external git-* program.
GIT_COMMANDS = set("""add am annotate apply archive bisect blame branch bundle cat-file check-attr
check-ignore checkout cherry cherry-pick clean clone commit count-objects describe diff diff-files
diff-index diff-tree fetch for-each-ref format-patch fsck gc grep hash-object help init log ls-files
ls-remote ls-tree merge merge-base mv name-rev notes pull push range-diff rebase reflog remote
repack replace reset restore rev-list rev-parse revert rm shortlog show show-branch show-ref
sparse-checkout stash status submodule switch tag update-index verify-commit version whatchanged
worktree write-tree""".split())
_GIT_EXEC_KEYS = re.compile(r"^(core|alias|credential|filter|diff|merge|include|includeif|gpg|"
                            r"sequence|pager|interactive|uploadpack|receive|remote|url)\.|"
                            r"command$|cmd$|program$|helper$|sshcommand$", re.I)

# name -> (options taking a value, positional arguments before the command, privileged)
_WRAPPERS: dict[str, tuple[set[str], int, bool]] = {
    "command": (set(), 0, False), "builtin": (set(), 0, False),
    "exec": ({"-a"}, 0, False), "nohup": (set(), 0, False), "time": ({"-f", "-o"}, 0, False),
    "nice": ({"-n", "--adjustment"}, 0, False), "timeout": ({"-s", "-k", "--signal",
                                                             "--kill-after"}, 1, False),
    "stdbuf": ({"-i", "-o", "-e"}, 0, False), "unbuffer": (set(), 0, False),
    "ionice": ({"-c", "-n", "--class", "--classdata"}, 0, False),
    "setsid": (set(), 0, False), "chrt": (set(), 1, False), "taskset": ({"-c"}, 1, False),
    "coproc": (set(), 0, False), "flock": ({"-w", "-E", "--timeout", "--conflict-exit-code"},
                                          1, False),
    "strace": ({"-o", "-e", "-p", "-s", "-u", "-E"}, 0, False), "ltrace": ({"-o", "-e"}, 0, False),
    "busybox": (set(), 0, False), "catchsegv": (set(), 0, False),
    "sudo": ({"-u", "-g", "-C", "-h", "-p", "-D", "-r", "-t", "-U", "-T", "--user", "--group",
              "--host", "--prompt", "--chdir", "--role", "--type", "--other-user"}, 0, True),
    "doas": ({"-u", "-C"}, 0, True), "pkexec": ({"--user"}, 0, True),
    "chroot": ({"--userspec", "--groups"}, 1, True), "runuser": ({"-u", "-g", "-G"}, 0, True),
    "su": ({"-g", "-G", "-s", "--shell", "--group"}, 1, True),
}
# wrapper -> options whose value is a shell command string
_STRING_OPTIONS = {"flock": {"-c", "--command"}, "su": {"-c", "--command"},
                   "runuser": {"-c", "--command"}, "script": {"-c", "--command"},
                   "env": {"-S", "--split-string"}}
# wrapper -> options after which it runs a shell we cannot see
_OPAQUE_OPTIONS = {"sudo": {"-i", "-s", "--login", "--shell", "-e", "--edit"},
                   "doas": {"-s"}, "su": set(), "runuser": set()}

# Programs whose arguments decide what else runs: a run-time word among them is undecidable.
_ARGS_RUN = (SHELLS | set(INTERPRETERS) | set(_WRAPPERS) | {
    "eval", "trap", "source", ".", "alias", "enable", "hash", "env", "xargs", "find", "git",
    "awk", "gawk", "mawk", "nawk", "sed", "watch", "script", "ssh", "docker", "podman",
    "kubectl", "parallel", "make", "python", "python3", "nsenter", "unshare", "bwrap",
    "systemd-run", "at", "crontab"})

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
        if name is not None and _DANGEROUS_VARS.match(_text(name).split("[")[0]):
            self.out.problems.append(f"it sets {_text(name)}, which changes what runs")

    def redirect(self, node: Any) -> None:
        ops = {c.type for c in node.children if not c.is_named}
        if not ops & _WRITE_OPS:
            return
        dest = node.child_by_field_name("destination")
        target = _static(dest) if dest is not None else None
        if target is None:
            self.out.writes.append("a file named at run time")
        elif target not in _HARMLESS_TARGETS and not target.isdigit():
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
        base = _base(resolve(program, self.path))
        if any(v is None for v in values) and (base in _ARGS_RUN or _PY_VERSIONED.match(base)):
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
        _inspect(cmd, self)

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


def _inspect(cmd: Simple, w: _Walker) -> None:
    """Mark what ``cmd`` runs beyond itself, and collect the commands it wraps."""
    prog, args = _base(cmd.program), cmd.argv[1:]
    if cmd.tail_unknown:
        cmd.executes = cmd.executes or "its arguments are filled in at run time"
    if prog in SHELLS:
        code = _option_value(args, {"-c"})
        if code is not None:
            cmd.wrapper = True
            w.string(code)
        elif not [a for a in args if not a.startswith("-")] or "-s" in args or "-i" in args:
            cmd.executes = "a shell reading commands from its input"
        return
    if prog in INTERPRETERS or _PY_VERSIONED.match(prog):
        code_opts = INTERPRETERS.get(prog, {"-c"})
        positional = [a for a in args if not a.startswith("-")]
        if any(a in code_opts or any(a.startswith(o) and len(o) == 2 and len(a) > 2
                                     and not a.startswith("--") for o in code_opts)
               for a in args) or not positional or "-" in args:
            cmd.executes = f"{prog} runs code given inline or on its input"
        return
    if prog in ("eval", "trap"):
        code = " ".join(args) if prog == "eval" else (args[0] if args else "")
        if code and not code.startswith("-"):
            cmd.wrapper = True
            w.string(code)
        return
    if prog in ("source", ".", "alias", "enable", "hash", "unalias", "declare", "typeset"):
        if prog in ("source", ".", "alias", "enable") or "-p" in args or "-f" in args:
            cmd.executes = f"{prog} can run or redefine commands"
        return
    if prog == "env":
        _env(cmd, args, w)
        return
    if prog == "xargs":
        inner = _skip_options(args, {"-I", "-L", "-n", "-P", "-s", "-d", "-E", "-a", "-l",
                                     "--arg-file", "--delimiter", "--max-args", "--max-procs",
                                     "--replace", "--max-lines", "--eof", "--max-chars"}, 0)
        cmd.executes = "xargs runs a command with arguments read at run time"
        cmd.wrapper = True
        w.nested(inner or ["echo"], cmd.text, tail_unknown=True)
        return
    if prog == "find":
        _find(cmd, args, w)
        return
    if prog == "git":
        _git(cmd, args)
        return
    if prog in ("awk", "gawk", "mawk", "nawk", "busybox-awk"):
        program = next((a for a in args if not a.startswith("-")), "")
        if "-f" in args or re.search(r"system|\||getline|>", program):
            cmd.executes = "awk can run commands (system, pipes)"
        return
    if prog == "sed":
        script = " ".join(a for a in args if not a.startswith("-"))
        if "-f" in args or re.search(r"(^|[;{}\n]|\d|\$|/)\s*e\b|s(.).*\2.*\2[a-zA-Z0-9]*e",
                                     script):
            cmd.executes = "sed's e command runs shell commands"
        return
    if prog in ("watch",):
        inner = _skip_options(args, {"-n", "-d", "--interval", "--differences"}, 0)
        cmd.wrapper = True
        w.string(" ".join(inner))
        return
    if prog in ("ssh", "docker", "podman", "kubectl", "parallel", "tmux", "screen", "make",
                "nsenter", "unshare", "bwrap", "firejail", "systemd-run", "at", "batch",
                "crontab"):
        cmd.executes = f"{prog} runs commands this policy cannot see"
        return
    if prog in _WRAPPERS:
        _wrapper(cmd, prog, args, w)


def _wrapper(cmd: Simple, prog: str, args: list[str], w: _Walker) -> None:
    takes, positionals, privileged = _WRAPPERS[prog]
    cmd.wrapper, cmd.privileged = True, privileged
    code = _option_value(args, _STRING_OPTIONS.get(prog, set()))
    if code is not None:
        w.string(code)
        return
    if set(args) & _OPAQUE_OPTIONS.get(prog, set()):
        cmd.executes = f"{prog} starts a shell"
        return
    if prog == "command" and ({"-v", "-V"} & set(args)):
        cmd.wrapper = False  # only prints where a program is
        return
    if prog == "busybox":
        inner = args
    else:
        inner = _skip_options(args, takes, positionals)
    if inner:
        w.nested(inner, cmd.text)
    elif prog in ("su", "runuser"):
        cmd.executes = f"{prog} starts a shell"


def _env(cmd: Simple, args: list[str], w: _Walker) -> None:
    cmd.wrapper = True
    code = _option_value(args, _STRING_OPTIONS["env"])
    if code is not None:
        w.string(code)
        return
    rest = _skip_options(args, {"-u", "--unset", "-C", "--chdir"}, 0)
    while rest and "=" in rest[0] and not rest[0].startswith("="):
        name = rest[0].split("=", 1)[0]
        if _DANGEROUS_VARS.match(name):
            w.out.problems.append(f"it sets {name}, which changes what runs")
        rest = rest[1:]
    if rest:
        w.nested(rest, cmd.text)
    else:
        cmd.wrapper = False


def _find(cmd: Simple, args: list[str], w: _Walker) -> None:
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-exec", "-execdir", "-ok", "-okdir"):
            j = i + 1
            while j < len(args) and args[j] not in (";", "+"):
                j += 1
            cmd.executes = f"find {a} runs a command for each file"
            cmd.wrapper = True
            w.nested(args[i + 1:j], cmd.text, tail_unknown=True)
            i = j
        elif a in ("-delete", "-fprint", "-fprint0", "-fprintf", "-fls"):
            w.out.writes.append(f"find {a}")
        i += 1


def _git(cmd: Simple, args: list[str]) -> None:
    i = 0
    while i < len(args) and args[i].startswith("-"):
        a = args[i]
        if a in ("-c", "--config-env") or a.startswith(("--config-env=", "--exec-path=",
                                                        "-c")):
            cmd.executes = "git -c can make git run any command"
            return
        i += 2 if a in ("-C", "--git-dir", "--work-tree", "--namespace") else 1
    sub = args[i] if i < len(args) else ""
    if sub and sub not in GIT_COMMANDS and sub != "config":
        cmd.executes = f"git {sub} may be an alias or an external command"
    elif sub == "config":
        rest = [a for a in args[i + 1:] if not a.startswith("-")]
        if "--edit" in args or "-e" in args or (len(rest) >= 2 and _GIT_EXEC_KEYS.search(
                rest[0].split(".", 1)[0] + "." if rest[0].count(".") == 0 else rest[0])):
            cmd.executes = "this git setting can make git run commands"
    elif sub in ("submodule", "bisect", "rebase") and ({"foreach", "run", "--exec", "-x"}
                                                        & set(args)):
        cmd.executes = f"git {sub} runs a command given to it"


def _option_value(args: list[str], options: set[str]) -> str | None:
    """The value of the first of ``options`` in ``args`` (``-c CODE``, ``-cCODE``, ``--o=V``,
    also inside a cluster like ``-lc CODE``)."""
    for i, a in enumerate(args):
        if a == "--":
            return None
        for o in options:
            if a == o:
                return args[i + 1] if i + 1 < len(args) else ""
            if o.startswith("--") and a.startswith(o + "="):
                return a[len(o) + 1:]
        if (len(a) > 2 and a[0] == "-" and a[1] != "-" and a[1:].isalpha()
                and any(len(o) == 2 and o[1] in a[1:] for o in options)):
            return args[i + 1] if i + 1 < len(args) else ""
    return None


def _skip_options(args: list[str], takes_value: set[str], positionals: int) -> list[str]:
    """``args`` after the wrapper's own options and its leading positional arguments."""
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            i += 1
            break
        if not a.startswith("-") or a == "-":
            break
        if a in takes_value:
            i += 2
        else:
            i += 1
    return args[i + positionals:]


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


def _base(program: str) -> str:
    return posixpath.basename(program) or program


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
