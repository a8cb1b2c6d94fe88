"""``whalebone serve``: the engine room's command.

    whalebone serve                                  # the bundled engine on 127.0.0.1:8000
    whalebone serve --engine random:micro --port 0   # random weights, any free port
    whalebone serve --engine vllm:http://gpu1:8000 --api-key "$KEY" --host 0.0.0.0

The first line printed is ``listening on http://HOST:PORT`` (the real port, also for
``--port 0``), so scripts and tests can read where to connect.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from whalebone.core.errors import WhaleboneError


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from whalebone.engine.factory import open_engine
    from whalebone.engine.server import create_app

    api_key = args.api_key or os.environ.get("WHALEBONE_API_KEY") or None
    options = {"model": args.model} if args.model else {}
    try:
        engine = open_engine(args.engine, **options)
        app = create_app(engine, api_key=api_key, concurrency=args.concurrency,
                         queue=args.queue)
    except (WhaleboneError, ValueError) as e:
        print(f"whalebone serve: {e}", file=sys.stderr)
        return 2
    if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"whalebone serve: warning: {args.host} is reachable from other machines and "
              "no --api-key is set", file=sys.stderr)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        print(f"whalebone serve: cannot listen on {args.host}:{args.port}: {e}",
              file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"listening on http://{shown}:{port} ({engine.name}, model {engine.model})",
          flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=args.log_level == "debug")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve an engine over a DeepSeek-compatible HTTP API",
                       description="Serve an engine (default: the bundled one) over a "
                       "DeepSeek-compatible API: /v1/chat/completions, /v1/completions, "
                       "/v1/models, /health, /openapi.json.")
    p.add_argument("--engine", default="bundled", metavar="SPEC",
                   help="bundled | bundled:PATH | random:PRESET | scripted:FILE | "
                   "deepseek[:MODEL] | vllm:URL | sglang:URL | whalebone:URL | openai:URL | "
                   "router:FILE.toml")
    p.add_argument("--model", help="the upstream model name (needed for openai:URL; "
                   "vllm/sglang ask /v1/models when it is not given)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' "
                   "(default: $WHALEBONE_API_KEY)")
    p.add_argument("--queue", type=int, default=16,
                   help="requests that may wait for the engine before 429 (default 16)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="generations run at once (default 1)")
    p.add_argument("--log-level", default="warning",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(handler=_serve)
