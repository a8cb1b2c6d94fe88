"""``whalebone render`` and ``whalebone parse``: the codec from the command line.

For people debugging prompts: see the exact bytes (and token count) V4 is given for a
conversation, or what a completion parses to and what is wrong with it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from whalebone.core.errors import WhaleboneError
from whalebone.dsml import tokens as T
from whalebone.dsml.encoder import encode_messages
from whalebone.dsml.parser import parse_completion


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    return Path(path).read_text(encoding="utf-8")


def _conversation(text: str) -> list[dict[str, Any]]:
    """A list of messages, or ``{"messages": [...], "tools": [...]}`` (tools go on the first
    message, as in V4's published test vectors)."""
    data = json.loads(text)
    if isinstance(data, dict):
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise WhaleboneError('expected {"messages": [...]} with at least one message')
        if data.get("tools"):
            messages[0] = {**messages[0], "tools": data["tools"]}
        return messages
    if not isinstance(data, list):
        raise WhaleboneError("expected a JSON list of messages")
    return data


def _render(args: argparse.Namespace) -> int:
    messages = _conversation(_read(args.file))
    prompt = encode_messages(messages, args.mode, drop_thinking=not args.keep_thinking,
                             add_default_bos_token=not args.no_bos,
                             reasoning_effort=args.reasoning_effort)
    if args.tokens:
        from whalebone.dsml.tokenizer import load_tokenizer

        ids = load_tokenizer().encode(prompt)
        print(json.dumps({"tokens": len(ids), "ids": ids}) if args.ids else len(ids))
    else:
        sys.stdout.write(prompt)
    return 0


def _parse(args: argparse.Namespace) -> int:
    tools = json.loads(_read(args.tools)) if args.tools else None
    text = _read(args.file)
    if text.endswith(T.EOS + "\n"):  # what `echo` and editors add
        text = text[:-1]
    result = parse_completion(text, args.mode, tools=tools, strict=False)
    out = result.to_openai()
    out["errors"] = [e.model_dump() for e in result.errors]
    print(json.dumps(out, ensure_ascii=False, indent=2))
    return 1 if any(e.rejects for e in result.errors) else 0


def _guard(handler):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        try:
            return int(handler(args))
        except json.JSONDecodeError as e:
            print(f"whalebone {args.command}: invalid JSON: {e}", file=sys.stderr)
            return 2
        except (OSError, WhaleboneError) as e:
            print(f"whalebone {args.command}: {e}", file=sys.stderr)
            return 2
    return run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    render = sub.add_parser("render", help="render a conversation (JSON) as V4's prompt")
    render.add_argument("file", help="JSON file of messages, or - for stdin")
    render.add_argument("--mode", choices=["chat", "thinking"], default="thinking")
    render.add_argument("--keep-thinking", action="store_true",
                        help="keep the reasoning of earlier turns (drop_thinking off)")
    render.add_argument("--reasoning-effort", choices=["high", "max"])
    render.add_argument("--no-bos", action="store_true")
    render.add_argument("--tokens", action="store_true",
                        help="print the V4 token count instead (needs the engine extra)")
    render.add_argument("--ids", action="store_true", help="with --tokens: the ids too")
    render.set_defaults(handler=_guard(_render))

    parse = sub.add_parser("parse", help="parse a completion; exit 1 if V4 would reject it")
    parse.add_argument("file", help="the completion text, or - for stdin")
    parse.add_argument("--mode", choices=["chat", "thinking"], default="thinking")
    parse.add_argument("--tools", help="JSON file of tools, to check the calls' arguments")
    parse.set_defaults(handler=_guard(_parse))
