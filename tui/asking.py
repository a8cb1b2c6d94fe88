"""The approvals half of the chat app: a shell command under the ``ask`` policy and a budget
extension a frozen run waits for, each put to the person as a modal. A mixin of
:class:`~whalebone.tui.app.ChatApp`, kept apart so the app stays a composition of widgets."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from textual.app import App

from whalebone.core.errors import WhaleboneError
from whalebone.tui.approvals import Decision
from whalebone.tui.modals import BudgetApproval, ShellApproval


class Approvals(App[None]):
    """Needs ``runner``, ``transcript``, ``_asked``, ``_asking_budget`` and
    ``refresh_scopes`` from the app."""

    runner: Any
    _asked: set[str]
    _asking_budget: bool
    _decided_elsewhere: set[str]  # requests decided elsewhere while their modal was up

    async def ask_shell(self, command: str) -> Decision:
        """The shell tool's ``ask``: a modal; the run waits for the person's answer."""
        self.transcript.awaiting("shell", True)
        try:
            workspace = self.runner.workspace.expanduser().resolve()  # the full path
            return await self.ask(ShellApproval(command, str(workspace)))
        finally:
            self.transcript.awaiting("shell", False)

    async def ask(self, modal: Any) -> Decision:
        """Show an approval modal and wait for its decision. If the step is cancelled while
        it is open, the modal goes away with it (a cancelled step decides nothing)."""
        answer: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()

        def decided(decision: Decision | None) -> None:
            if not answer.done():
                answer.set_result(decision or Decision(approved=False))

        await self.push_screen(modal, decided)
        try:
            return await answer
        finally:
            if answer.cancelled() and modal.is_current:
                modal.dismiss(None)

    def check_extensions(self) -> None:
        """Put the next extension request that waits for a person to the person, one at a
        time (a frozen run, here or in another process, is waiting on the ledger for it)."""
        try:
            pending = self.runner.pending_extensions()
        except WhaleboneError as e:
            self.notify(f"budget ledger: {e}", severity="error")
            return
        shown = self.screen
        if isinstance(shown, BudgetApproval) and shown.record.id not in {r.id for r in pending}:
            self._decided_elsewhere.add(shown.record.id)
            shown.dismiss(None)
            return
        if self._asking_budget:
            return
        for record in pending:
            if record.id not in self._asked:
                self._asked.add(record.id)
                self._asking_budget = True
                self.push_screen(BudgetApproval(record), partial(self.extension_decided, record))
                return

    def extension_decided(self, record: Any, decision: Decision | None) -> None:
        self._asking_budget = False
        if record.id in self._decided_elsewhere:  # show that decision, leave the log alone
            self.notify(self.runner.extension_outcome(record), timeout=12)
            self.refresh_scopes()
            return
        decision = decision or Decision(approved=False)
        try:
            applied = self.runner.decide_extension(record, decision)
        except WhaleboneError as e:
            self.notify(str(e), severity="error", timeout=8)
            return
        verb = "approved" if decision.approved else "denied"
        if applied:
            self.notify(f"Budget extension for {record.scope} {verb}.")
        else:
            self.notify(f"The request for {record.scope} was already decided; yours is logged.",
                        severity="warning")
        self.refresh_scopes()
