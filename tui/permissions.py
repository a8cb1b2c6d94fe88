"""Shell command patterns a person chose to allow always (“allow always” in an approval).

Kept in a JSON file beside the session database (mode 0600: the commands a person trusts are
their own business), read at start, shown and revoked with ``/permissions``. A pattern is a
shell glob over the whole command, as in the config's ``[shell] allow``; chained commands
(``a; b``, ``a && b``, pipes) are still always asked about, whatever the patterns say.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from whalebone.core.errors import WhaleboneError


class PermissionsError(WhaleboneError):
    """The permissions file cannot be read or written."""


# Programs whose second word chooses what they do: "allow always" keeps it in the pattern, so
# allowing ``git status`` does not allow ``git push``.
SUBCOMMANDS = frozenset({
    "apt", "apt-get", "brew", "bun", "cargo", "docker", "dotnet", "gh", "git", "go", "just",
    "kubectl", "make", "npm", "npx", "pip", "pip3", "pnpm", "poetry", "systemctl", "uv",
    "yarn"})


def suggest_pattern(command: str) -> str:
    """A pattern for commands like ``command``: the program (and its subcommand, for the
    programs that have them) with any arguments (``git status -s`` -> ``git status *``;
    ``ls -la`` -> ``ls *``; ``make`` -> ``make``)."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    if not words:
        return command.strip()
    sub = len(words) > 1 and words[0] in SUBCOMMANDS and words[1][:1].isalpha()
    head = words[:2] if sub else words[:1]
    return " ".join(head) + (" *" if len(words) > len(head) else "")


class Permissions:
    """The allow-always patterns in a JSON file (a list of strings)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._patterns = self._read()

    def _read(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise PermissionsError(f"cannot read {self.path}: {e}") from None
        if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
            raise PermissionsError(f"{self.path} is not a JSON list of patterns")
        return list(dict.fromkeys(data))

    def patterns(self) -> list[str]:
        return list(self._patterns)

    def add(self, pattern: str) -> bool:
        """Allow ``pattern`` from now on; False if it already was."""
        pattern = pattern.strip()
        if not pattern or pattern in self._patterns:
            return False
        self._write([*self._patterns, pattern])
        return True

    def remove(self, pattern: str) -> bool:
        if pattern not in self._patterns:
            return False
        self._write([p for p in self._patterns if p != pattern])
        return True

    def _write(self, patterns: list[str]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(patterns, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            raise PermissionsError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._patterns = patterns
