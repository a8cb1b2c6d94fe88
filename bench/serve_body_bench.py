"""What an oversized request body costs ``whalebone serve`` (issue 16: bodies capped as they
stream in). One command:

    .venv/bin/python bench/serve_body_bench.py [--mb 200] [--pythonpath DIR]

Starts ``whalebone serve`` (scripted engine, a key in the environment) as a subprocess, then
POSTs an authenticated ``--mb`` MB body twice over raw sockets: once announced by Content-Length,
once chunked with no length. For each: the status, how many bytes were sent before the answer
came, and the server's resident memory (VmRSS) before and after and its peak (VmHWM), from
/proc. ``--pythonpath`` runs another checkout's code (e.g. the tree before the fix) the same way,
for a side-by-side figure.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = b"x" * (1 << 20)


def rss(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024
    return out


def post(port: int, mb: int, chunked: bool) -> tuple[str, int]:
    """Send the body until the server answers; (status line, bytes of body sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    length = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % (mb << 20)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Authorization: Bearer bench-key\r\nContent-Type: application/json\r\n"
                 + length + b"\r\n\r\n")
    sent = 0
    try:
        for _ in range(mb):
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered: stop sending
            sock.sendall(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK) if chunked else CHUNK)
            sent += len(CHUNK)
        else:
            if chunked:
                sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server closed the connection mid-body
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    sock.close()
    return data.split(b"\r\n", 1)[0].decode() or "(no answer)", sent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--pythonpath", help="run this PYTHONPATH's whalebone instead")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "s.json"
        script.write_text(json.dumps(["fine<｜end▁of▁sentence｜>"]))
        env = {**os.environ, "WHALEBONE_API_KEY": "bench-key"}
        if args.pythonpath:
            env["PYTHONPATH"] = args.pythonpath
        proc = subprocess.Popen([sys.executable, "-m", "whalebone.agent.cli", "serve", "--port",
                                 "0", "--engine", f"scripted:{script}"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            port = int(line.split()[2].rsplit(":", 1)[1])
            print(f"{args.mb} MB authenticated POST to whalebone serve "
                  f"({args.pythonpath or 'this checkout'}); MiB of server memory")
            for chunked in (False, True):
                time.sleep(0.5)
                before = rss(proc.pid)
                start = time.monotonic()
                status, sent = post(port, args.mb, chunked)
                took = time.monotonic() - start
                time.sleep(0.5)
                after = rss(proc.pid)
                how = "chunked       " if chunked else "Content-Length"
                print(f"  {how}: {status:<38} after {sent >> 20:>4} MiB sent, {took:5.2f} s; "
                      f"RSS {before['VmRSS']} -> {after['VmRSS']}, peak {after['VmHWM']}")
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
