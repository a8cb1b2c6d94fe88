"""Project instructions: ``AGENTS.md`` (and ``WHALEBONE.md``) at the workspace root.

What other agents read from a repository (Codex, OpenCode and Aider read ``AGENTS.md``; Claude
Code its own file) goes into the system prompt **once, when a session starts**: the system
prompt is the head of every prompt, so the instructions sit in the cached prefix and cost
nothing per turn. The text is frozen with the session (in its config), so a file edited later
changes new sessions only; :func:`changed_since` tells a resumed session's front end to say so.

The files come from whatever repository the agent is pointed at, so they are untrusted text:
read through the workspace's confinement (a link to ``~/.ssh/id_rsa`` named ``AGENTS.md`` is
refused, not sent to a model), capped in size, never rendered as a template, and neutralised
so they cannot forge a special token.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from whalebone.agent.config import AgentConfig
from whalebone.dsml.untrusted import neutralise
from whalebone.tools.confine import PathError, Root

NAMES = ("AGENTS.md", "WHALEBONE.md")  # in this order when both are there
MAX_BYTES = 64 * 1024  # per file; more is cut, with a note


@dataclass(frozen=True, slots=True)
class Instructions:
    """The instructions of one workspace: the text that goes into the system prompt, where it
    came from (for ``--help``-level messages) and a digest to notice later edits."""

    text: str
    sources: tuple[str, ...]
    digest: str

    @property
    def label(self) -> str:
        return ", ".join(self.sources)


def read_instructions(workspace: str | os.PathLike[str]) -> Instructions | None:
    """The workspace's project instructions, or None when it has none (or none readable: a
    link, a directory, a file that is not UTF-8 are passed over)."""
    try:
        root = Root(Path(workspace), read_only=True)
    except (OSError, PathError):
        return None
    parts: list[str] = []
    sources: list[str] = []
    digest = hashlib.sha256()
    for name in NAMES:
        try:
            data = _head(root, name, MAX_BYTES + 1)
        except (OSError, PathError):
            continue
        digest.update(name.encode() + b"\0" + data + b"\0")
        cut = len(data) > MAX_BYTES
        text = data[:MAX_BYTES].decode("utf-8", errors="replace").strip()
        if not text:
            continue
        note = f"\n[{name} is longer than {MAX_BYTES:,} bytes; the rest is left out]" if cut else ""
        parts.append(f"## {name}\n\n{neutralise(text)}{note}")
        sources.append(f"{Path(workspace) / name}")
    if not parts:
        return None
    head = ("# Project instructions\n\nThe repository you work in gives these instructions "
            "(from its files, read when this session started). Follow them where they do not "
            "conflict with the user's request or your safety rules.")
    return Instructions("\n\n".join([head, *parts]), tuple(sources), digest.hexdigest()[:16])


def _head(root: Root, name: str, n: int) -> bytes:
    """Up to ``n`` bytes of a regular file in ``root`` (no links, no devices)."""
    fd = root.open(name)
    try:
        data = b""
        while len(data) < n and (chunk := os.read(fd, n - len(data))):
            data += chunk
        return data
    finally:
        os.close(fd)


def changed_since(workspace: str | os.PathLike[str], digest: str) -> bool:
    """Whether the workspace's instructions differ from those a session started with."""
    now = read_instructions(workspace)
    return (now.digest if now else "") != digest


def with_instructions(config: AgentConfig, workspace: str | os.PathLike[str] | None, *,
                      resumed: bool) -> tuple[AgentConfig, str | None]:
    """``config`` for a session in ``workspace``, and a one-line note for the person, if any.

    A new session takes the workspace's instructions now; a resumed one keeps those it started
    with (its stored config), and the note says when the files have changed since."""
    if workspace is None:
        return config, None
    if resumed:
        if changed_since(workspace, config.instructions_digest):
            return config, ("the project instructions (AGENTS.md) changed since this session "
                            "started; the change applies to new sessions")
        return config, None
    found = read_instructions(workspace)
    if found is None:
        return config.model_copy(update={"instructions": "", "instructions_digest": ""}), None
    update = {"instructions": found.text, "instructions_digest": found.digest}
    return config.model_copy(update=update), f"project instructions from {found.label}"
