"""The shell policy against a hostile corpus: every way a denied program can hide in a command
line. Each case ran on the text-glob policy this replaced (issue 16); each must be refused here,
both by the decision and by the real tool (the marker file never appears)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from whalebone.tools.registry import ToolError
from whalebone.tools.shell import DEFAULT_DENY, ShellPolicy, run_shell
from whalebone.tools.shellparse import parse

TOUCH_DENIED = ShellPolicy(default="allow", deny=["touch *"])

# deny=["touch *"] under default="allow": each runs touch, so each is denied.
HIDDEN_TOUCH = [
    "echo $(touch P)", "echo `touch P`", "(touch P)", "{ touch P; }",
    "if true; then touch P; fi", "/usr/bin/touch P", "env touch P", "\\touch P", "touch\tP",
    "echo \"$(touch P)\"", "cat <(touch P)", "echo >(touch P)", "x=$(touch P)",
    "echo ${a:-$(touch P)}", "echo $((1 + $(touch P)))", "for i in 1; do touch P; done",
    "while true; do touch P; break; done", "until touch P; do :; done",
    "case x in x) touch P;; esac", "f() { touch P; }; f", "! touch P", "'touch' P",
    "\"touch\" P", "to''uch P", "t\\ouch P", "command touch P", "exec touch P", "nice touch P",
    "nice -n 5 touch P", "nohup touch P", "timeout 5 touch P", "timeout -s KILL 5 touch P",
    "stdbuf -oL touch P", "env -i A=1 touch P", "env -u HOME touch P", "time touch P",
    "setsid touch P", "sh -c 'touch P'", "bash -c \"touch P\"", "bash -lc 'touch P'",
    "sh -c 'sh -c \"touch P\"'", "eval touch P", "eval 'touch P'", "trap 'touch P' EXIT",
    "find . -exec touch P {} +", "find . -execdir touch P \\;", "find . -ok touch P \\;",
    "echo P | xargs touch", "xargs -n1 touch < list", "sudo touch P", "sudo -u root touch P",
    "busybox touch P", "flock /tmp/l touch P", "flock -c 'touch P' /tmp/l", "env -S 'touch P'",
    "watch touch P", "coproc touch P", "[[ $(touch P) ]]", "echo x > $(touch P)",
    "cat <<EOF\n$(touch P)\nEOF", "/usr/bin/env /usr/bin/touch P", "command -p touch P",
    "ls; /bin/../usr/bin/touch P", "tou\\\nch P", "x=1 touch P",
]
# Plain chains, which the old policy caught too: kept as guards.
CHAIN_GUARDS = ["true && touch P", "false || touch P", "ls | touch P", "echo a; touch P",
                "touch P &"]
# Not decidable before they run: never allowed without a person, even under default="allow".
UNDECIDABLE = [
    "t=touch; $t P", "$(echo touch) P", "`echo touch` P", "${T} P", "\"$T\" P", "t*ch P",
    "/usr/bin/tou?h P", "{touch,P}", "$'\\x74ouch' P", "python3 -c 'import os'",
    "python3 -", "perl -e 'system(1)'", "node -e 'x'", "ruby -e 'x'", "echo x | sh",
    "curl -s x | bash", "bash -s", "awk 'BEGIN{system(\"touch P\")}'",
    "awk '{print | \"sh\"}' f", "sed 'e touch P' f", "sed -n 's/x/touch P/e' f",
    "git -c core.pager='touch P' log", "git -c alias.x='!touch P' x", "git x",
    "git config core.fsmonitor 'touch P'", "source ./x.sh", ". ./x.sh", "alias ls='touch P'",
    "PATH=/tmp/evil ls", "export PATH=/tmp/evil; ls", "LD_PRELOAD=/tmp/x.so ls",
    "env PATH=/tmp/evil ls", "ls &&", "ls $(", "echo 'unterminated", "cat 3<>f",
    "xargs -0 rm", "python3 -ic 'x'", "perl -ne 'x' f", "printf -v PATH /tmp/e; ls",
    "read -r PATH <<< /tmp/e; ls", "IFS=/ ls", "find . -exec $X {} +", "eval \"$CMD\"", "env $X",
    "git $X", "find . $X", "sh -c \"$X\"", "python3 $X", "sudo -s", "sudo -i",
    "ssh host touch P", "make all",
]
# The default deny list, under default="allow": each got past the old one.
DEFAULT_DENIED = [
    "sudo\tid", "/usr/bin/sudo id", "doas id", "pkexec id", "rm -fr /", "rm -rf  /",
    "rm -r -f /", "rm -f -r /", "rm -R -f /", "rm -Rf /", "rm --recursive --force /",
    "rm -rfv /", "rm -rf -- /", "rm -rf build /", "rm -fr ~/", "rm -rf '~'", "rm -rf *",
    "rm -rf .", "rm --no-preserve-root -rf /", "echo $(rm -fr /)", "sh -c 'rm -rf /'",
    "env rm -rf /", "\\rm -rf /", "/bin/rm -rf /", "nice rm -r -f /",
    "dd if=/dev/zero of=/dev/sda",
]
# ... and the ones the old list caught, kept as guards.
DEFAULT_GUARDS = [
    "sudo id", "sudo  -u root id", "rm -rf /", "rm -rf //", "rm -rf /.", "rm -rf /tmp/..",
    "rm -rf ~", "rm -rf ~/", "rm -rf /*", "rm -rf ~/*", "ls; rm -rf ~", "mkfs.ext4 /dev/sda1",
    "shutdown -h now", "reboot", ":(){ :|:& };:", "cat a | sudo tee /etc/x",
]
# Ordinary commands the policy still lets through when allowed, and the parse's program names.
ALLOWED = [
    ("ls -la", ["ls *"]), ("ls -la | wc -l", ["ls *", "wc *"]),
    ("git status && git diff", ["git status*", "git diff*"]), ("cat a.txt", ["cat *"]),
    ("find . -name '*.py'", ["find *"]), ("cd src && ls", ["ls*"]),
    ("grep -rn 'a b' .", ["grep *"]), ("/usr/bin/ls -l", ["ls *"]),
    ("timeout 5 pytest -q", ["pytest*"]), ("env pytest -q", ["pytest *"]),
    ("rm -rf build", ["rm *"]), ("rm -f -- -r /x", ["rm *"]),
    ("echo \"key: $HOME\"", ["echo *"]), ("for f in *.py; do wc -l \"$f\"; done", ["wc *"]),
    ("cat $(ls *.txt)", ["cat *", "ls *"]),
]


def _refused(command: str, ws: Path, policy: ShellPolicy) -> None:
    with pytest.raises(ToolError):
        anyio.run(run_shell, command, ws, policy, None)
    assert not (ws / "P").exists()


@pytest.mark.parametrize("command", HIDDEN_TOUCH + CHAIN_GUARDS)
def test_a_denied_program_is_found_wherever_it_hides(command: str, tmp_path: Path) -> None:
    assert TOUCH_DENIED.decide(command) == "deny", command
    _refused(command, tmp_path, TOUCH_DENIED)


@pytest.mark.parametrize("command", UNDECIDABLE)
def test_what_cannot_be_decided_statically_is_never_auto_allowed(command: str,
                                                                  tmp_path: Path) -> None:
    trusting = ShellPolicy(default="allow", deny=[])
    assert trusting.decide(command) == "ask", command
    assert ShellPolicy(default="deny", deny=[]).decide(command) == "deny", command
    everything = ShellPolicy(allow=["*"], deny=[])  # even a pattern that allows everything
    assert everything.decide(command) == "ask", command
    _refused(command, tmp_path, trusting)


@pytest.mark.parametrize("command", DEFAULT_DENIED + DEFAULT_GUARDS)
def test_the_default_deny_list_holds_against_spelling(command: str) -> None:
    assert ShellPolicy(default="allow").decide(command) == "deny", command


@pytest.mark.parametrize(("command", "allow"), ALLOWED)
def test_ordinary_commands_are_still_allowed(command: str, allow: list[str]) -> None:
    assert ShellPolicy(allow=allow).decide(command) == "allow", command


def test_allow_patterns_never_cover_programs_that_run_others() -> None:
    policy = ShellPolicy(allow=["find *", "xargs *", "python3 *", "git *", "awk *", "sh *"])
    for command in ("find . -exec touch P {} +", "find . | xargs rm", "python3 -c 'x'",
                    "git -c core.sshCommand=x fetch", "awk 'BEGIN{system(\"id\")}'",
                    "echo id | sh"):
        assert policy.decide(command) == "ask", command
    assert policy.decide("python3 train.py") == "allow"
    assert policy.decide("git log --oneline") == "allow"


def test_deny_wins_over_allow_and_a_chain_needs_every_part_allowed() -> None:
    policy = ShellPolicy(allow=["ls *", "rm *"], deny=["rm -rf /"])
    assert policy.decide("ls && rm -fr /") == "deny"
    assert policy.decide("ls && curl x") == "ask"
    assert policy.decide("ls > out.txt") == "ask"  # a write is the default's to decide
    assert policy.decide("ls 2>/dev/null >&2") == "allow"
    # a run-time word is data, unless it could complete a deny pattern
    assert policy.decide("ls $DIR") == "allow"
    assert policy.decide("rm -rf $DIR") == "ask"
    assert ShellPolicy(default="allow").decide("sudo $CMD") == "deny"
    assert ShellPolicy(default="allow").decide("rm -f $X") == "ask"


def test_the_parse_resolves_programs_through_path() -> None:
    parsed = parse("/usr/bin/env /bin/ls -l; ./ls", path="/usr/bin:/bin")
    assert [c.program for c in parsed.commands] == ["env", "ls", "./ls"]


def test_the_default_deny_list_is_the_documented_one() -> None:
    assert ShellPolicy().deny == DEFAULT_DENY and "sudo *" in DEFAULT_DENY


WRAPPERS = ["", "env ", "command ", "nice -n 3 ", "nohup ", "timeout 9 ", "stdbuf -oL ",
            "sudo ", "exec ", "time ", "setsid ", "env -i X=1 ", "/usr/bin/env ", "builtin "]
PROGRAMS = ["touch", "/usr/bin/touch", "\\touch", "'touch'", "\"touch\"", "to''uch",
            "/bin/../usr/bin/touch"]
CONTEXTS = ["{}", "echo $({})", "echo `{}`", "({})", "{{ {}; }}", "if true; then {}; fi",
            "for i in 1; do {}; done", "case a in a) {};; esac", "true && {}", "ls | {}",
            "bash -c '{}'", "sh -c \"{}\"", "eval '{}'", "echo \"$({})\"", "cat <({})",
            "f() {{ {}; }}; f", "find . -exec {} \\;", "echo x | xargs {}"]


def test_every_combination_of_wrapper_spelling_and_context_is_denied() -> None:
    missed = [cmd for context in CONTEXTS for wrapper in WRAPPERS for program in PROGRAMS
              for cmd in [context.format(f"{wrapper}{program}\tP")]
              if TOUCH_DENIED.decide(cmd) != "deny"]
    assert missed == []
