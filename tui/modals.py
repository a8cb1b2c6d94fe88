"""Modal screens: approvals that a person decides (a shell command under the ``ask`` policy, a
budget extension), and the small questions of session management (rename, delete).

An approval is approve or deny, with an optional reason that goes to the log and, on a denial,
back to the model. Escape denies: when in doubt, the answer is no.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text as RichText
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from whalebone.tui.approvals import Decision
from whalebone.tui.permissions import suggest_pattern


def steady(screen: ModalScreen[Any]) -> None:
    """Cursors that do not blink (see PromptInput: SSH traffic, stable screenshots)."""
    for box in screen.query(Input):
        box.cursor_blink = False


class ApprovalModal(ModalScreen[Decision]):
    """Approve or deny, with a reason."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # Not priority bindings: keys typed into the reason box just before are handled first,
        # in order, so the reason logged is the reason typed. (Input keeps ctrl+d for itself.)
        # Ctrl+N is the app's "new session": one key, one meaning. Escape denies.
        Binding("ctrl+y", "approve", "Approve"),
        Binding("escape", "deny", "Deny"),
    ]
    kind = "approval"

    def __init__(self, title: str, subject: str, details: list[str] | None = None) -> None:
        super().__init__(classes=f"approval {self.kind}")
        self.title_text = title
        self.subject = subject
        self.details = details or []

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title", markup=False)
            yield Static(RichText(self.subject), id="dialog-subject")
            if self.details:
                yield Static(RichText("\n".join(self.details)), id="dialog-details")
            yield from self.compose_fields()
            yield Input(placeholder="reason (optional, logged)", id="reason", compact=True)
            with Horizontal(id="dialog-buttons"):
                yield from self.compose_buttons()
                yield Button("Approve ^Y", variant="success", id="approve", compact=True)
                yield Button("Deny Esc", variant="error", id="deny", compact=True)

    def compose_fields(self) -> ComposeResult:
        """Inputs a kind of approval asks for besides the reason."""
        yield from ()

    def compose_buttons(self) -> ComposeResult:
        """Choices a kind of approval offers besides approve and deny."""
        yield from ()

    def on_mount(self) -> None:
        steady(self)
        self.query_one("#reason", Input).focus()

    def _reason(self) -> str:
        return self.query_one("#reason", Input).value.strip()

    def action_approve(self) -> None:
        self.dismiss(Decision(approved=True, reason=self._reason()))

    def action_deny(self) -> None:
        self.dismiss(Decision(approved=False, reason=self._reason()))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        actions = {"approve": self.action_approve, "always": self.action_always}
        actions.get(str(event.button.id), self.action_deny)()

    def action_always(self) -> None:
        self.action_approve()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()  # Enter in the reason box decides nothing: a choice must be explicit


class ShellApproval(ApprovalModal):
    """A command under the ``ask`` policy: once, always (commands matching an editable pattern
    run without asking from now on; ``/permissions`` lists and revokes them), or not."""

    kind = "shell-approval"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+l", "always", "Allow always"),
    ]

    def __init__(self, command: str, workspace: str) -> None:
        super().__init__("Run this shell command?", command, [f"in {workspace}"])
        self.pattern = suggest_pattern(command)

    def compose_fields(self) -> ComposeResult:
        with Horizontal(id="amount-row"):
            yield Label("always allow: ")
            yield Input(value=self.pattern, id="pattern", compact=True)

    def compose_buttons(self) -> ComposeResult:
        yield Button("Allow always ^L", variant="warning", id="always", compact=True)

    def action_always(self) -> None:
        pattern = self.query_one("#pattern", Input).value.strip()
        self.dismiss(Decision(approved=True, reason=self._reason(), always=pattern))


class BudgetApproval(ApprovalModal):
    """A frozen run's extension request (a ``budget.records.RequestRecord``): the blocked
    scope, its spend, and the objective facts the auditor would see. No narrative from the
    worker reaches this screen."""

    kind = "budget-approval"

    def __init__(self, record: Any) -> None:
        self.record = record
        r = record.request
        unit = "$" if r.unit == "usd" else ""
        tail = "" if r.unit == "usd" else " tokens"

        def amount(x: float) -> str:
            return f"{unit}{x:.4f}{tail}" if r.unit == "usd" else f"{x:,.0f}{tail}"

        facts = r.facts
        details = [
            f"session {r.session_id} · run {r.run_id} · agent {r.agent} · {r.kind} call",
            f"limit {amount(r.limit)} · spent {amount(r.spent)} · in flight "
            f"{amount(r.in_flight)} · this call needs {amount(r.needed)}",
            f"extensions so far {r.extensions_so_far} · one extension adds at most "
            f"{amount(r.max_step)}",
            ("facts: " + ", ".join(f"{k}={v}" for k, v in _facts(facts).items()))[:400],
        ]
        super().__init__("Extend this budget?", f"{r.scope}", details)
        self.max_step = r.max_step

    def compose_fields(self) -> ComposeResult:
        with Horizontal(id="amount-row"):
            yield Label("amount to add: ")
            yield Input(value=f"{self.max_step:g}", id="amount", type="number", compact=True)

    def _amount(self) -> float | None:
        try:
            return float(self.query_one("#amount", Input).value)
        except (ValueError, LookupError):
            return None

    def action_approve(self) -> None:
        self.dismiss(Decision(approved=True, reason=self._reason(), amount=self._amount()))


def _facts(facts: Any) -> dict[str, Any]:
    data = facts.model_dump() if hasattr(facts, "model_dump") else dict(facts)
    return {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in data.items()
            if v not in (None, [], {}, "")}


class TextQuestion(ModalScreen[str | None]):
    """One line of text (a new title, a scope name); Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, value: str = "") -> None:
        super().__init__(classes="question")
        self.question = question
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question, id="dialog-title", markup=False)
            yield Input(value=self.value, id="answer", compact=True)

    def on_mount(self) -> None:
        steady(self)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmQuestion(ModalScreen[bool]):
    """Yes or no; Escape and n say no."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__(classes="question")
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question, id="dialog-title", markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button("Yes y", variant="error", id="yes", compact=True)
                yield Button("No n", variant="primary", id="no", compact=True)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")
