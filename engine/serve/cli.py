"""``whalebone serve``: the engine room's command.

    whalebone serve                                  # the bundled engine on 127.0.0.1:8000
    whalebone serve --engine random:micro --port 0   # random weights, any free port
    WHALEBONE_API_KEY=... whalebone serve --engine vllm:http://gpu1:8000 --host 0.0.0.0
    whalebone serve --api-key-file ~/.config/whalebone/key --allow-host gpu1.lan

The first line printed is ``listening on http://HOST:PORT`` (the real port, also for
``--port 0``), so scripts and tests can read where to connect.

The key comes from ``$WHALEBONE_API_KEY`` or a file only its owner can read: on the command line
(``--api-key``, deprecated) any local user reads it in ``/proc/PID/cmdline``. With no key the
server says so on start, in one warning line.
"""

from __future__ import annotations

import argparse
import os
import socket
import stat
import sys

from whalebone.core.errors import WhaleboneError
from whalebone.engine.factory import SPEC_HELP


def read_key_file(path: str) -> str:
    """The key in ``path``, which must be a regular file no one but its owner can read."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise WhaleboneError(f"the key file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise WhaleboneError(f"the key file {path} is readable by others (mode "
                                 f"{stat.S_IMODE(st.st_mode):o}); chmod 600 it")
        with open(path, encoding="utf-8") as f:
            key = f.read().strip()
    except OSError as e:
        raise WhaleboneError(f"cannot read the key file {path}: {e.strerror}") from None
    if not key:
        raise WhaleboneError(f"the key file {path} is empty")
    return key


def _api_key(args: argparse.Namespace) -> str | None:
    if args.api_key_file:
        return read_key_file(args.api_key_file)
    if args.api_key:
        print("whalebone serve: warning: --api-key is deprecated: other local users can read it "
              "in /proc/PID/cmdline; use $WHALEBONE_API_KEY or --api-key-file", file=sys.stderr)
        return str(args.api_key)
    return os.environ.get("WHALEBONE_API_KEY") or None


def _log_requests(level: str) -> None:
    """The access log (one line per request, engine/serve/accesslog.py) on stderr at ``level``."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger = logging.getLogger("whalebone.serve")
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from whalebone.engine.factory import open_engine
    from whalebone.engine.serve.server import create_app

    options = {"model": args.model} if args.model else {}
    wildcard = args.host in ("0.0.0.0", "::", "")
    try:
        api_key = _api_key(args)
        engine = open_engine(args.engine, **options)
        app = create_app(engine, api_key=api_key, concurrency=args.concurrency,
                         queue=args.queue, any_address=wildcard,
                         hosts=[*args.allow_host, *([] if wildcard else [args.host])],
                         max_body=args.max_body_mb * 1024 * 1024)
    except (WhaleboneError, ValueError) as e:
        print(f"whalebone serve: {e}", file=sys.stderr)
        return 2
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
    if api_key is None:
        print(f"whalebone serve: WARNING: no API key: anyone who can reach {shown}:{port} can "
              "use this engine (set WHALEBONE_API_KEY or --api-key-file)", file=sys.stderr,
              flush=True)
    served = app.state.server.model
    print(f"listening on http://{shown}:{port} ({engine.name}, model {served})", flush=True)
    _log_requests(args.log_level)
    # uvicorn's own start-up and access lines stay quiet unless asked: ours say more.
    quiet = "warning" if args.log_level == "info" else args.log_level
    config = uvicorn.Config(app, log_level=quiet, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve an engine over a DeepSeek-compatible HTTP API",
                       description="Serve an engine (default: the bundled one) over a "
                       "DeepSeek-compatible API: /v1/chat/completions, /v1/completions, "
                       "/v1/models, /health, /openapi.json. The model id is the checkpoint's "
                       "name (whalebone-nano for the bundled one; GET /v1/models); another "
                       "model name is a 404. Thinking is on by default, as on DeepSeek's API: "
                       "a request turns it off with \"thinking\": {\"type\": \"disabled\"} "
                       "(and asks for more with \"reasoning_effort\": \"max\"). Each request "
                       "is logged in one line on stderr: method, path, status, tokens, cache "
                       "hits, milliseconds.")
    p.add_argument("--engine", default="bundled", metavar="SPEC",
                   help=SPEC_HELP)
    p.add_argument("--model", help="the upstream model name (needed for openai:URL; "
                   "vllm/sglang ask /v1/models when it is not given)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    p.add_argument("--api-key-file", metavar="PATH",
                   help="require 'Authorization: Bearer KEY' with the key in PATH (mode 0600; "
                   "default: $WHALEBONE_API_KEY)")
    p.add_argument("--api-key", help="deprecated: visible to every local user; use "
                   "$WHALEBONE_API_KEY or --api-key-file")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a Host name clients may use besides loopback ones (repeatable); "
                   "other names are refused, against DNS rebinding")
    p.add_argument("--max-body-mb", type=int, default=64,
                   help="largest request body in MiB (default 64)")
    p.add_argument("--queue", type=int, default=16,
                   help="requests that may wait for the engine before 429 (default 16)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="generations run at once (default 1)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="info (default): one line per request; warning: problems only")
    p.set_defaults(handler=_serve)
