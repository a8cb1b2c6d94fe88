"""Reading the DSML tool-call block, tag by tag, as V4's reference parser reads it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from whalebone.dsml import tokens as T
from whalebone.dsml.models import ToolCall, ToolCallArgumentsDelta, ToolCallBegin, ToolCallEnd
from whalebone.dsml.scan import (
    AFTER_BLOCK,
    BLOCK,
    DONE,
    HEAD,
    PARAM,
    PARAM_GAP,
    SKIP_INVOKE,
    SKIP_PARAM,
    VALUE,
    Call,
    Markers,
    Reader,
)
from whalebone.dsml.schema import check_arguments

_BLOCK = Markers(T.INVOKE_START, T.TOOL_CALLS_CLOSE)
_HEAD = Markers(T.PARAM_START, T.INVOKE_END)
_SKIP_INVOKE = Markers(T.INVOKE_END)
_PARAM_NAME = ' name="'
_STRING_TRUE, _STRING_FALSE = '" string="true">', '" string="false">'
_PARAM = Markers(_STRING_TRUE, _STRING_FALSE, T.PARAM_END)
# The value ends at the first "/｜DSML｜parameter"; the "<" (or "<\n") before it is not value.
_VALUE = Markers(T.PARAM_END, "<" + T.PARAM_END, "<\n" + T.PARAM_END)
_SKIP_PARAM = Markers(T.PARAM_END)
_PARAM_GAP = Markers(T.PARAM_START, T.INVOKE_END)
_AFTER_BLOCK = Markers(T.EOS)
_GAP = ">\n"  # what stands between DSML tags
_INVOKE_HEAD = re.compile(r'^\s*name="(.*?)">\n$', re.DOTALL)


class BlockReader(Reader):
    """The block's states. ``tools`` enables the schema checks of each call's arguments."""

    def __init__(self, strict: bool, tools: Sequence[Mapping[str, Any]] | None) -> None:
        super().__init__(strict)
        self.schemas: dict[str, Mapping[str, Any]] | None = None
        if tools is not None:
            fns = [t.get("function", t) for t in tools]
            self.schemas = {f["name"]: f.get("parameters") or {} for f in fns}
        self.state = BLOCK
        self.gap = ""  # text seen in a gap between tags (only its first chars matter)
        self.gap_bad = False
        self.gap_start = 0
        self.block_quiet = True  # nothing at all since the last tag (a quirk of the reference)
        self.calls: list[ToolCall] = []
        self.call: Call | None = None
        self.n_invokes = 0
        self.finished = False

    def _open_block(self) -> None:
        self.state = BLOCK
        self._reset_gap()

    def _reset_gap(self) -> None:
        self.gap, self.gap_bad, self.block_quiet = "", False, True
        self.gap_start = self.pos  # issues about a gap point at its start, however it arrives

    def _gap(self, markers: Markers, expected: str, what: str) -> str | None:
        """Read a gap between tags up to the next marker; the gap must equal ``expected``."""
        at, marker, safe = self._scan(markers)
        upto = at if marker is not None else safe
        if upto:
            self.block_quiet = False
            if len(self.gap) <= len(expected):
                self.gap += self._peek(min(upto, len(expected) + 1 - len(self.gap)))
            if not self.gap_bad and not expected.startswith(self.gap):
                self.gap_bad = True
                self._issue("malformed_block" if what != "after" else "text_after_end",
                            self.gap_start, self._gap_message(what))
            self._consume(upto)
        if marker is None:
            return None
        if not self.gap_bad and self.gap != expected:
            self.gap_bad = True
            self._issue("malformed_block" if what != "after" else "text_after_end",
                        self.gap_start, self._gap_message(what))
        self._consume(len(marker))
        self._reset_gap()
        return marker

    @staticmethod
    def _gap_message(what: str) -> str:
        if what == "after":
            return "nothing may follow </｜DSML｜tool_calls> but the end of the message"
        return f'DSML tags must be separated by ">\\n" ({what})'

    def _block(self) -> bool:
        marker = self._gap(_BLOCK, _GAP, "between invokes")
        if marker is None:
            return False
        if marker == T.TOOL_CALLS_CLOSE:
            self.state = AFTER_BLOCK
        else:
            self.state = HEAD
        return True

    def _head(self) -> bool:
        at, marker, _ = self._scan(_HEAD)
        if marker is None:
            return False
        head, start = self._peek(at), self.pos
        self._consume(at + len(marker))
        m = _INVOKE_HEAD.match(head)
        index = self.n_invokes
        self.n_invokes += 1
        if m is None:
            self._issue("malformed_invoke", start, 'an invoke must start with name="TOOL">; '
                        "the call was skipped", call=None)
            self.state = SKIP_INVOKE if marker == T.PARAM_START else BLOCK
            self._reset_gap()
            return True
        self.call = Call(index, m.group(1))
        self.events.append(ToolCallBegin(index=index, name=self.call.name))
        if marker == T.PARAM_START:
            self.state = PARAM
        else:
            self._end_call()
        return True

    def _skip_invoke(self) -> bool:
        at, marker, safe = self._scan(_SKIP_INVOKE)
        self._consume(at + len(marker) if marker else safe)
        if marker is None:
            return False
        self.state = BLOCK
        self._reset_gap()
        return True

    def _param(self) -> bool:
        call = self.call
        assert call is not None
        at, marker, _ = self._scan(_PARAM)
        prefix_ok = _PARAM_NAME.startswith(self._peek(len(_PARAM_NAME)))
        if not prefix_ok or marker == T.PARAM_END or (
            marker is not None and at < len(_PARAM_NAME)
        ):
            self._issue("malformed_parameter", self.pos, 'a parameter must read name="NAME" '
                        'string="true|false">VALUE</｜DSML｜parameter>', call=call)
            self.state = SKIP_PARAM
            return True
        if marker is None:
            return False
        name = self._peek(at, len(_PARAM_NAME))
        self._consume(at + len(marker))
        call.is_string = marker == _STRING_TRUE
        call.value = []
        if name in call.params:
            self._issue("duplicate_parameter", self.pos, f"parameter {name!r} is given twice",
                        call=call)
        call.param = name
        key = json.dumps(name, ensure_ascii=False)
        lead = ("{" if not call.arguments else ", ") + key + ": "
        self._arguments(call, lead + ('"' if call.is_string else ""))
        self.state = VALUE
        return True

    def _arguments(self, call: Call, delta: str) -> None:
        call.arguments.append(delta)
        self.events.append(ToolCallArgumentsDelta(index=call.index, delta=delta))

    def _value(self) -> bool:
        call = self.call
        assert call is not None and call.param is not None
        at, marker, safe = self._scan(_VALUE)
        upto = at if marker is not None else safe
        if upto:
            chunk = self._peek(upto)
            call.value.append(chunk)
            self._arguments(call, json.dumps(chunk, ensure_ascii=False)[1:-1]
                            if call.is_string else chunk)
            self._consume(upto)
        if marker is None:
            return False
        end = self.pos
        self._consume(len(marker))
        if marker == T.PARAM_END:
            self._issue("malformed_parameter", end, f"parameter {call.param!r} must end with "
                        "</｜DSML｜parameter>", call=call)
        if call.is_string:
            self._arguments(call, '"')
        if call.param not in call.params:
            call.params[call.param] = ("".join(call.value), call.is_string)
        call.param = None
        self.state = PARAM_GAP
        return True

    def _skip_param(self) -> bool:
        at, marker, safe = self._scan(_SKIP_PARAM)
        self._consume(at + len(marker) if marker else safe)
        if marker is None:
            return False
        self.state = PARAM_GAP
        return True

    def _param_gap(self) -> bool:
        marker = self._gap(_PARAM_GAP, _GAP, "after a parameter")
        if marker is None:
            return False
        if marker == T.PARAM_START:
            self.state = PARAM
        else:
            self._end_call()
        return True

    def _end_call(self) -> None:
        call = self.call
        assert call is not None
        self._arguments(call, "}" if call.arguments else "{}")
        arguments = "".join(call.arguments)
        parsed = self._typed(call)
        tc = ToolCall(index=call.index, name=call.name, arguments=arguments,
                      parsed_arguments=parsed, errors=call.errors)
        self.calls.append(tc)
        self.events.append(ToolCallEnd(call=tc))
        self.call = None
        self.state = BLOCK
        self._reset_gap()

    def _typed(self, call: Call) -> dict[str, Any] | None:
        """Decode string="false" values as JSON and check the call against its schema."""
        values: dict[str, Any] = {}
        where = self.pos
        for name, (raw, is_string) in call.params.items():
            if is_string:
                values[name] = raw
                continue
            try:
                values[name] = json.loads(raw)
            except ValueError:
                self._issue("bad_json", where, f"{call.name}: parameter {name!r} has "
                            f'string="false" but its value is not JSON: {raw[:60]!r}',
                            rejects=False, call=call)
        if self.schemas is not None:
            if call.name not in self.schemas:
                known = ", ".join(sorted(self.schemas)) or "none"
                self._issue("unknown_tool", where, f"there is no tool named {call.name!r} "
                            f"(tools: {known})", rejects=False, call=call)
            else:
                for kind, msg in check_arguments(values, self.schemas[call.name]):
                    self._issue(kind, where, f"{call.name}: {msg}",  # type: ignore[arg-type]
                                rejects=False, call=call)
        return values if not call.errors else None

    def _after_block(self) -> bool:
        marker = self._gap(_AFTER_BLOCK, "", "after")
        if marker is None:
            return False
        self.finished = True
        self.state = DONE
        return True

    def _finish_block(self) -> None:
        """The completion ended inside the block. The reference accepts a text that ends
        exactly after a tag, or after a parameter's ">\\n", keeping the calls read so far."""
        at = self.pos
        accepted = (self.state == BLOCK and not self.buf and self.block_quiet) or (
            self.state == PARAM_GAP and not self.gap_bad and self.gap + self.buf == _GAP)
        head = _INVOKE_HEAD.match(self.buf) if self.state == HEAD else None
        if head is not None:
            self.call = Call(self.n_invokes, head.group(1))
            self.n_invokes += 1
            self.events.append(ToolCallBegin(index=self.call.index, name=self.call.name))
            accepted = True
        if accepted and self.call is not None:
            self._end_call()
        self._issue("unclosed_block", at, "the message ended inside the tool-call block; "
                    "calls after the last complete one were lost", rejects=not accepted)
        if self.call is not None:  # a call cut short is reported, never run
            self._issue("unclosed_block", at, f"call {self.call.name!r} was cut short",
                        call=self.call)
            self._end_call()
