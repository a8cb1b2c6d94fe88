"""'whalebone serve' as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import anyio
import httpx
from serving import CALL_WEATHER, WEATHER_TOOLS, serving

from whalebone.engine.base import GenerationRequest
from whalebone.engine.clients import ChatEngine
from whalebone.engine.scripted import ScriptedEngine


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from whalebone.agent.cli import main; "
            "sys.exit(main())", *args]


def test_serve_command_proxies_another_server_and_reports_where_it_listens() -> None:
    upstream = ScriptedEngine([CALL_WEATHER])
    with serving(upstream) as (base, _):
        env = {**os.environ, "WHALEBONE_API_KEY": "cli-key"}
        proc = subprocess.Popen(_cli("serve", "--engine", f"whalebone:{base}", "--port", "0"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("listening on http://127.0.0.1:"), proc.stderr.read()
            url = line.split()[2]
            # A chat request to the proxy is rendered there and completed upstream, raw.
            client = ChatEngine(url + "/v1", model="m", api_key="cli-key")
            fin = anyio.run(client.generate, GenerationRequest(
                messages=[{"role": "user", "content": "Paris?"}], tools=WEATHER_TOOLS))
            assert "get_weather" in fin.text
            assert upstream.requests[0].prompt is not None  # upstream got the rendered prompt
            assert httpx.get(url + "/v1/models").status_code == 401
        finally:
            proc.terminate()
            proc.wait(10)


def test_serve_command_refuses_a_bad_engine_spec() -> None:
    done = subprocess.run(_cli("serve", "--engine", "llama:x"), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "unknown engine 'llama:x'" in done.stderr
