"""The session list: every session in the store, newest first. Keys act on the highlighted
session (new, rename, delete); the list only asks, through messages, and the app decides."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Label, ListItem, ListView

from whalebone.agent.store import SessionInfo

MARKS = {"running": "●", "cancelled": "◌"}
LEGEND = "● running  ◌ cancelled\n⚙ a daemon job"


def job_sessions(jobs_db: Path | None) -> set[str]:
    """The sessions the daemon's jobs run in (read-only; no daemon, no file: none), so the
    list can show them apart from chat sessions."""
    if jobs_db is None or not jobs_db.is_file():
        return set()
    try:
        db = sqlite3.connect(f"file:{jobs_db}?mode=ro", uri=True, timeout=1)
        try:
            rows = db.execute("SELECT session_id FROM jobs WHERE session_id != ''").fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return set()  # another schema or a locked file: the list just does not split
    return {str(r[0]) for r in rows}


def when(stamp: float, now: float | None = None) -> str:
    """A session's last activity, as a person says it: "just now", "5 min ago", "3 h ago",
    then the date."""
    ago = (time.time() if now is None else now) - stamp
    if ago < 60:
        return "just now"
    if ago < 3600:
        return f"{int(ago // 60)} min ago"
    if ago < 86400:
        return f"{int(ago // 3600)} h ago"
    return dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d")


class SessionItem(ListItem):
    """A session: its title (up to two lines, then cut), then when and how long."""

    def __init__(self, info: SessionInfo, *, job: bool = False) -> None:
        self.info = info
        title = ("⚙ " if job else "") + (info.title or "(untitled)")
        mark = MARKS.get(info.status, "")
        detail = f"{when(info.updated)} · {info.messages} msgs" + (f" · {mark}" if mark else "")
        super().__init__(Label(title, markup=False, classes="session-title"),
                         Label(detail, markup=False, classes="session-detail"),
                         classes="session-item")
        self.tooltip = f"{title}\n{info.id} · {info.status}"


class SessionList(ListView):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new", "New"),
        Binding("r", "rename", "Rename"),
        Binding("d,delete", "delete", "Delete"),
    ]

    class Chosen(Message):
        def __init__(self, session_id: str) -> None:
            super().__init__()
            self.session_id = session_id

    class NewRequested(Message):
        pass

    class RenameRequested(Message):
        def __init__(self, session_id: str) -> None:
            super().__init__()
            self.session_id = session_id

    class DeleteRequested(Message):
        def __init__(self, session_id: str) -> None:
            super().__init__()
            self.session_id = session_id

    async def show(self, sessions: list[SessionInfo], current: str | None,
                   jobs: set[str] | frozenset[str] = frozenset()) -> None:
        """Replace the list, keeping ``current`` highlighted: chat sessions first, then,
        under their own heading, the sessions of daemon jobs (``jobs``)."""
        chats = [s for s in sessions if s.id not in jobs]
        runs = [s for s in sessions if s.id in jobs]
        items: list[ListItem] = [SessionItem(s) for s in chats]
        if runs:
            items.append(ListItem(Label("daemon jobs", classes="session-heading"),
                                  disabled=True, classes="session-heading"))
            items += [SessionItem(s, job=True) for s in runs]
        await self.clear()
        await self.extend(items)
        ids = [item.info.id if isinstance(item, SessionItem) else None for item in items]
        if chats or runs:  # something is always highlighted, so the keys have a session
            first = next(i for i, sid in enumerate(ids) if sid is not None)
            self.index = ids.index(current) if current in ids else first

    @property
    def highlighted_id(self) -> str | None:
        item = self.highlighted_child
        return item.info.id if isinstance(item, SessionItem) else None

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, SessionItem):
            self.post_message(self.Chosen(event.item.info.id))

    def action_new(self) -> None:
        self.post_message(self.NewRequested())

    def action_rename(self) -> None:
        if (sid := self.highlighted_id) is not None:
            self.post_message(self.RenameRequested(sid))

    def action_delete(self) -> None:
        if (sid := self.highlighted_id) is not None:
            self.post_message(self.DeleteRequested(sid))
