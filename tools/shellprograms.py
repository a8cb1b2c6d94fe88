"""What programs do with their arguments: which run other commands, and how to find them.

The knowledge behind :mod:`whalebone.tools.shellparse`: shells and interpreters that take code
inline (``sh -c``, ``python -c``, ``perl -e``), wrappers that run the command after their own
options (``env``, ``nice``, ``timeout``, ``sudo``, ``xargs``, ``find -exec``, …), and programs
that can be made to run something this parse cannot see (``git -c``, ``awk`` with ``system``,
``sed``'s ``e``, ``source``). :func:`inspect` marks a simple command accordingly and hands the
commands it wraps back to the walker, which records and inspects them in turn.
"""

from __future__ import annotations

import posixpath
import re
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from whalebone.tools.shellparse import Parsed, Simple


class Walker(Protocol):
    out: Parsed

    def nested(self, argv: list[str], text: str, *, tail_unknown: bool = False) -> None: ...

    def string(self, code: str) -> None: ...


DANGEROUS_VARS = re.compile(
    r"^(PATH|IFS|ENV|BASH_ENV|CDPATH|GLOBIGNORE|PROMPT_COMMAND|SHELLOPTS|BASHOPTS|LD_\w*|"
    r"\w*_PRELOAD|PYTHON\w*|PERL5\w*|PERLLIB|RUBYOPT|RUBYLIB|NODE_OPTIONS|NODE_PATH|GIT_\w*|"
    r"BASH_FUNC\w*|EDITOR|VISUAL|PAGER|GCONV_PATH|HOSTALIASES)$")
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
PY_VERSIONED = re.compile(r"^(python|pypy)\d+(\.\d+)*$")
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

# Builtins that assign the variables named among their arguments.
_SETS_VARIABLES = {"read", "mapfile", "readarray", "printf", "getopts", "export", "declare",
                   "typeset", "local", "readonly"}
# Programs whose arguments decide what else runs: a run-time word among them is undecidable.
ARGS_RUN = (SHELLS | set(INTERPRETERS) | set(_WRAPPERS) | {
    "eval", "trap", "source", ".", "alias", "enable", "hash", "env", "xargs", "find", "git",
    "awk", "gawk", "mawk", "nawk", "sed", "watch", "script", "ssh", "docker", "podman",
    "kubectl", "parallel", "make", "python", "python3", "nsenter", "unshare", "bwrap",
    "systemd-run", "at", "crontab"})


def inspect(cmd: Simple, w: Walker) -> None:
    """Mark what ``cmd`` runs beyond itself, and collect the commands it wraps."""
    prog, args = base(cmd.program), cmd.argv[1:]
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
    if prog in INTERPRETERS or PY_VERSIONED.match(prog):
        code_opts = INTERPRETERS.get(prog, {"-c"})
        positional = [a for a in args if not a.startswith("-")]
        short = {o[1] for o in code_opts if len(o) == 2}
        if any(a in code_opts or (a[:1] == "-" and a[1:2] in short and not a.startswith("--"))
               or (a[:1] == "-" and a[1:].isalpha() and short & set(a[1:])) for a in args
               ) or not positional or "-" in args:
            cmd.executes = f"{prog} runs code given inline or on its input"
        return
    if prog in _SETS_VARIABLES and any(DANGEROUS_VARS.match(a.split("=", 1)[0]) for a in args):
        w.out.problems.append(f"{prog} sets a variable that changes what runs")
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


def _wrapper(cmd: Simple, prog: str, args: list[str], w: Walker) -> None:
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


def _env(cmd: Simple, args: list[str], w: Walker) -> None:
    cmd.wrapper = True
    code = _option_value(args, _STRING_OPTIONS["env"])
    if code is not None:
        w.string(code)
        return
    rest = _skip_options(args, {"-u", "--unset", "-C", "--chdir"}, 0)
    while rest and "=" in rest[0] and not rest[0].startswith("="):
        name = rest[0].split("=", 1)[0]
        if DANGEROUS_VARS.match(name):
            w.out.problems.append(f"it sets {name}, which changes what runs")
        rest = rest[1:]
    if rest:
        w.nested(rest, cmd.text)
    else:
        cmd.wrapper = False


def _find(cmd: Simple, args: list[str], w: Walker) -> None:
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


def base(program: str) -> str:
    return posixpath.basename(program) or program
