"""Server and client benchmarks (issue: remote engines). One command, figures side by side:

    .venv/bin/python bench/engine_server_bench.py [--requests 40] [--turns 20]

1. What HTTP costs: the same scripted tool-call completion generated directly from the engine,
   through ``whalebone serve``'s chat endpoint (render + parse + JSON), streamed as SSE, and
   through the raw-completion client; milliseconds per request and the ratio to direct.
2. Prefix-cache hits over an agent conversation served by the chat endpoint: the fraction of
   all prompt tokens reported as ``prompt_cache_hit_tokens`` after ``--turns`` tool turns
   (DeepSeek bills hits at ~1/30 of misses, so this fraction is the bill).
3. The chat client's stream assembly stays linear: microseconds per 1-3 character chunk of a
   DeepSeek-shaped stream at 10k and 40k chunks (a quadratic concat would show a 4x rise).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx
import uvicorn

from whalebone.dsml import Transcript, emit_completion
from whalebone.dsml import tokens as T
from whalebone.engine.base import GenerationRequest
from whalebone.engine.clients import ChatEngine, RawCompletionEngine
from whalebone.engine.scripted import ScriptedEngine
from whalebone.engine.serve.server import create_app

TOOLS = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                   "required": ["path"]}}}]
CALL = emit_completion("", reasoning="I will read the parser to find the bug. " * 4,
                       tool_calls=[("read_file", {"path": "src/parser.py"})])
SYSTEM = "You are a careful coding agent. " * 60


def serve(engine: Any) -> tuple[str, uvicorn.Server, threading.Thread]:
    uv = uvicorn.Server(uvicorn.Config(create_app(engine, queue=64), host="127.0.0.1", port=0,
                                       log_level="error", lifespan="off"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{uv.servers[0].sockets[0].getsockname()[1]}", uv, thread


def overhead(n: int) -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Fix it."}]
    engine = ScriptedEngine(lambda _: CALL, delta_chars=3)
    prompt = Transcript("thinking")
    prompt.append({**messages[0], "tools": TOOLS}, messages[1])
    text = prompt.render().text
    base, uv, thread = serve(engine)
    body = {"model": "m", "messages": messages, "tools": TOOLS}
    results: dict[str, float] = {}

    async def direct() -> None:
        await engine.generate(GenerationRequest(prompt=text))

    async def chat(client: httpx.AsyncClient) -> None:
        (await client.post("/v1/chat/completions", json=body)).raise_for_status()

    async def chat_sse(client: httpx.AsyncClient) -> None:
        async with client.stream("POST", "/v1/chat/completions",
                                 json={**body, "stream": True}) as r:
            async for _ in r.aiter_lines():
                pass

    raw = RawCompletionEngine(base, flavour="whalebone", model="m")

    async def raw_client() -> None:
        await raw.generate(GenerationRequest(prompt=text))

    async def go() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            cases = {"direct engine": direct, "chat endpoint": lambda: chat(client),
                     "chat endpoint, SSE": lambda: chat_sse(client),
                     "raw client -> /v1/completions": raw_client}
            for name, fn in cases.items():
                await fn()  # warm: tokenizer, connections
                start = time.perf_counter()
                for _ in range(n):
                    await fn()
                results[name] = (time.perf_counter() - start) / n * 1000
        await raw.aclose()

    anyio.run(go)
    uv.should_exit = True
    thread.join()
    print(f"1. per request, {n} requests each (a {len(CALL)}-char tool-call completion):")
    for name, ms in results.items():
        print(f"   {name:32s} {ms:7.2f} ms   {ms / results['direct engine']:5.2f}x direct")


def cache_hits(turns: int) -> None:
    engine = ScriptedEngine(lambda r: CALL if r.messages and len(r.messages) < 2 * turns
                            else emit_completion("Fixed.", reasoning="Done."))
    base, uv, thread = serve(engine)
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM},
                                      {"role": "user", "content": "Fix the parser bug."}]
    hit = total = 0
    with httpx.Client(base_url=base, timeout=60) as client:
        for i in range(turns):
            r = client.post("/v1/chat/completions",
                            json={"model": "m", "messages": messages, "tools": TOOLS}).json()
            usage, msg = r["usage"], r["choices"][0]["message"]
            hit += usage["prompt_cache_hit_tokens"]
            total += usage["prompt_tokens"]
            calls = msg.get("tool_calls") or []
            messages.append(msg)
            for c in calls:
                messages.append({"role": "tool", "tool_call_id": c["id"],
                                 "content": f"line {i}: def parse(): ..." * 5})
            if not calls:
                messages.append({"role": "user", "content": "Next."})
    uv.should_exit = True
    thread.join()
    print(f"2. {turns}-turn tool conversation through the chat endpoint: {hit} of {total} "
          f"prompt tokens were cache hits ({hit / total:.1%}; the first turn is all misses)")


def assembly(sizes: tuple[int, ...] = (10_000, 40_000)) -> None:
    print("3. chat client assembling a DeepSeek-shaped stream (1-3 char chunks):")
    for n in sizes:
        chunks = [{"choices": [{"index": 0, "delta": {"reasoning_content": "ab"}}]}] * (n // 2)
        args = '"path": "' + "x" * (n // 2) + '"'
        pieces = ["{", *[args[i:i + 3] for i in range(0, len(args), 3)], "}"]
        chunks += [{"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": p} | ({"name": "read_file"} if j == 0
                                                        else {})}]}}]}
            for j, p in enumerate(pieces)]
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
        body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
        body += b"data: [DONE]\n\n"

        class Handler(BaseHTTPRequestHandler):
            reply = body

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                self.send_response(200)
                self.send_header("content-length", str(len(self.reply)))
                self.end_headers()
                self.wfile.write(self.reply)

            def log_message(self, *a: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        client = ChatEngine(f"http://127.0.0.1:{httpd.server_address[1]}", model="m")
        start = time.perf_counter()
        fin = anyio.run(client.generate, GenerationRequest(
            messages=[{"role": "user", "content": "x"}]))
        us = (time.perf_counter() - start) / len(chunks) * 1e6
        httpd.shutdown()
        assert T.DSML in fin.text
        print(f"   {len(chunks):6d} chunks: {us:6.2f} us/chunk")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    overhead(args.requests)
    cache_hits(args.turns)
    assembly()


if __name__ == "__main__":
    main()
