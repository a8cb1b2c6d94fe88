"""Where a shell command runs: a bubblewrap sandbox, a scrubbed environment, resource limits.

On Linux each command runs under ``bwrap`` (bubblewrap, from the distribution): the whole
filesystem read-only, the workspace the only writable place, a fresh ``/tmp``, whalebone's home,
the usual credential stores (``~/.ssh``, ``~/.aws``, ``~/.gnupg``, ``~/.netrc``, …) and the
service sockets a read-only mount would still let it connect to (Docker, D-Bus, ``/run/user``)
hidden behind empty mounts, no network (``--unshare-net``) unless the policy allows it, new PID, IPC
and UTS namespaces, no capabilities, and its own session. The sandbox dies with whalebone
(``--die-with-parent``), and killing its process group ends everything in it, because the PID
namespace ends with its first process. Around it, ``prlimit`` caps CPU time, file size and
processes (the process cap does not bind root).

Where bubblewrap is missing or cannot create namespaces, :func:`unavailable` says why; the
shell then asks before every command (headless: refuses it) unless the user set
``sandbox = "off"``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

from whalebone.tools.redact import is_secret_name

# Credential stores under $HOME that commands never need to read.
HIDDEN_IN_HOME = (".ssh", ".aws", ".gnupg", ".azure", ".kube", ".docker", ".config/gcloud",
                  ".config/gh", ".config/hub", ".netrc", ".git-credentials", ".pypirc", ".npmrc",
                  ".password-store", ".local/share/keyrings", ".whalebone", ".config/whalebone")

# Sockets a read-only bind would still let a command connect to (a Docker socket is root).
HIDDEN_SYSTEM = ("/run/docker.sock", "/var/run/docker.sock", "/run/containerd", "/run/podman",
                 "/run/dbus", "/var/run/dbus", "/run/user", "/run/snapd.socket",
                 "/run/systemd/private", "/run/systemd/journal")


@cache
def _bwrap_problem() -> str | None:
    exe = shutil.which("bwrap")
    if exe is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        probe = subprocess.run([exe, *_base_args(network=False), "--", "true"],
                               capture_output=True, text=True, timeout=20,
                               stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
        return f"bubblewrap cannot start: {e}"
    if probe.returncode != 0:
        line = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"bubblewrap cannot create a sandbox here ({line})"
    return None


def unavailable(mode: str) -> str | None:
    """Why commands cannot be sandboxed, or None (sandboxed, or the user turned it off)."""
    if mode == "off":
        return None
    if not sys.platform.startswith("linux"):
        return "no sandbox on this system (bubblewrap needs Linux)"
    return _bwrap_problem()


_noticed: set[str] = set()


def notice(mode: str) -> None:
    """Say once, at start, on stderr, that commands will not be sandboxed (and why)."""
    if mode == "off":
        line = ('whalebone: shell commands run without a sandbox (sandbox = "off" in the '
                "[shell] settings)")
    else:
        problem = unavailable(mode)
        if problem is None:
            return
        line = (f"whalebone: shell commands are NOT sandboxed: {problem}; each one needs "
                'approval (set sandbox = "off" under [shell] to run them unconfined)')
    if line not in _noticed:
        _noticed.add(line)
        print(line, file=sys.stderr, flush=True)


def _base_args(*, network: bool) -> list[str]:
    args = ["--die-with-parent", "--new-session", "--unshare-all", "--cap-drop", "ALL",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    if network:
        args.append("--share-net")
    return args


def whalebone_home() -> Path:
    return Path(os.environ.get("WHALEBONE_HOME") or "~/.whalebone").expanduser()


def hidden_paths(extra: list[str] | tuple[str, ...] = ()) -> list[Path]:
    """Existing paths the sandbox hides: credential stores, whalebone's home, ``extra``."""
    home = Path.home()
    candidates = [home / p for p in HIDDEN_IN_HOME] + [whalebone_home()]
    candidates += [Path(p) for p in HIDDEN_SYSTEM]
    candidates += [Path(p).expanduser() for p in extra]
    seen: dict[str, Path] = {}
    for p in candidates:
        q = Path(os.path.realpath(p))  # mount points must not pass through a link
        if q.exists() and str(q) != "/":
            seen[str(q)] = q
    return list(seen.values())


def wrap(argv: list[str], workspace: Path, *, network: bool = False,
         hide: list[str] | tuple[str, ...] = ()) -> list[str]:
    """``argv`` as run inside the sandbox, ``workspace`` writable and its working directory."""
    ws = Path(os.path.realpath(workspace))
    before: list[str] = []
    after: list[str] = []
    for path in hidden_paths(hide):
        mount = ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null",
                                                                str(path)]
        # A hidden folder that holds the workspace is hidden first, then the workspace bound
        # back into it; everything else is hidden after, so it stays hidden inside the
        # workspace too.
        (before if ws.is_relative_to(path) else after).extend(mount)
    return ["bwrap", *_base_args(network=network), *before, "--bind", str(ws), str(ws),
            *after, "--chdir", str(ws), "--", *argv]


def limit(argv: list[str], *, cpu_seconds: int, max_file_mb: int, max_processes: int
          ) -> list[str]:
    """``argv`` under resource limits (``prlimit`` from util-linux, where there is one)."""
    exe = shutil.which("prlimit")
    if exe is None:
        return argv
    return [exe, f"--cpu={cpu_seconds}", f"--fsize={max_file_mb * 1024 * 1024}",
            f"--nproc={max_processes}", "--core=0", "--", *argv]


def scrubbed_env(pass_env: list[str] | tuple[str, ...] = (),
                 environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a command sees: this one without credentials, except those the user
    named in ``pass_env``."""
    env = dict(os.environ if environ is None else environ)
    keep = set(pass_env)
    return {k: v for k, v in env.items() if k in keep or not is_secret_name(k)}


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name ([] when there is no such pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat[stat.rindex(")") + 2:].split()


def start_time(pid: int) -> int:
    """A process's start time in clock ticks since boot (0 when unknown): with the pid, it
    names one process even after the pid is reused."""
    fields = _stat(pid)
    return int(fields[19]) if len(fields) > 19 else 0


def group_running(pgid: int, started: int) -> bool:
    """Whether the process group ``pgid``, whose leader started at ``started``, still has live
    members (zombies do nothing more). A live leader with another start time is a new group
    that reused the number; members without a leader are the group's orphans (the kernel
    reuses no pid that is still some group's id)."""
    if pgid <= 1:
        return False
    leader = _stat(pgid)
    if leader and leader[0] not in "ZX":
        return int(leader[19]) == started
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if len(fields) > 2 and fields[0] not in "ZX" and int(fields[2]) == pgid:
                return True
    return False
