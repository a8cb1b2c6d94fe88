"""The log of every decision a person made in the chat: shell commands under the ``ask`` policy
and budget extensions. One JSON object per line, appended and fsynced before the decision takes
effect, so the record exists even if the process dies right after."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from whalebone.core.home import open_private, private_dir


class Decision(BaseModel):
    """What a person decided in an approval modal."""

    approved: bool
    reason: str = ""
    amount: float | None = None  # a budget extension's size (None: the policy's maximum step)
    always: str = ""  # a shell pattern to allow from now on ("allow always")


class ApprovalRecord(BaseModel):
    kind: Literal["shell", "budget"]
    subject: str  # the command, or the budget request's scope and amount
    approved: bool
    reason: str = ""
    amount: float | None = None
    session: str = ""
    time: float = Field(default_factory=time.time)


class ApprovalLog:
    """Approval decisions in a JSONL file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        private_dir(self.path.parent)

    def append(self, record: ApprovalRecord) -> None:
        line = record.model_dump_json() + "\n"
        with open_private(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> list[ApprovalRecord]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(ApprovalRecord.model_validate(json.loads(line)))
        return out
