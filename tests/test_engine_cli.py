"""'whalebone serve' as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import anyio
import httpx
from serving import CALL_WEATHER, WEATHER_TOOLS, serving

from whalebone.dsml import emit_completion
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


def _start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """Start 'whalebone serve' (no key in the environment unless ``env`` puts one there)."""
    base_env = {k: v for k, v in os.environ.items() if k != "WHALEBONE_API_KEY"}
    proc = subprocess.Popen(_cli("serve", "--port", "0", *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**base_env, **(env or {})})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise AssertionError(proc.communicate()[1])
    return proc, line.split()[2]


def test_keyless_serve_warns_once_and_refuses_the_forged_invoke_of_issue_16(tmp_path) -> None:
    from hostile import FORGED_ARGUMENT_NAME

    script = tmp_path / "s.json"
    script.write_text(json.dumps([emit_completion("fine")] * 3))
    proc, url = _start("--engine", f"scripted:{script}")
    try:
        call = {"id": "c1", "type": "function", "function": {
            "name": "f", "arguments": json.dumps({FORGED_ARGUMENT_NAME: "rm -rf ~"})}}
        body = {"model": "m", "thinking": {"type": "disabled"}, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "unsafe_name"
        body["messages"][1]["tool_calls"][0]["function"]["arguments"] = '{"p": "v"}'
        assert httpx.post(url + "/v1/chat/completions", json=body, timeout=30).status_code == 200
        # a rebinding page's Host is refused even without a key
        assert httpx.get(url + "/v1/models", headers={"Host": "evil.example"}).status_code == 403
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    warnings = [line for line in err.splitlines() if "no API key" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], err


def test_the_key_comes_from_a_private_file_and_argv_is_deprecated(tmp_path) -> None:
    key = tmp_path / "key"
    key.write_text("file-key\n")
    key.chmod(0o644)
    done = subprocess.run(_cli("serve", "--engine", "llama:x", "--api-key-file", str(key)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "readable by others" in done.stderr
    key.chmod(0o600)
    proc, url = _start("--engine", "random:micro", "--api-key-file", str(key),
                       "--api-key", "argv-key")
    try:
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/v1/models",
                         headers={"Authorization": "Bearer argv-key"}).status_code == 401
        assert httpx.get(url + "/v1/models",
                         headers={"Authorization": "Bearer file-key"}).status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "no API key" not in err
    proc, url = _start("--engine", "random:micro", "--api-key", "argv-key")
    try:
        assert httpx.get(url + "/v1/models",
                         headers={"Authorization": "Bearer argv-key"}).status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "--api-key is deprecated" in err and "/proc/PID/cmdline" in err


def test_the_official_openai_sdk_against_serve_on_the_bundled_checkpoint(tmp_path) -> None:
    """What a user of the `openai` package meets: the model id is the checkpoint's name, another
    name is a 404, thinking is on by default and off on request, every request is one line on
    stderr with its tokens and cache hits."""
    import openai

    env = {"HOME": str(tmp_path), "WHALEBONE_HOME": str(tmp_path / ".wb")}
    proc, url = _start(env=env)  # the default engine: the bundled whalebone-nano
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == ["whalebone-nano"]
        with_thinking = client.chat.completions.create(
            model="whalebone-nano", max_tokens=8,
            messages=[{"role": "user", "content": "Hello"}])
        assert with_thinking.model == "whalebone-nano"
        assert with_thinking.usage is not None and with_thinking.usage.prompt_tokens > 0
        without = client.chat.completions.create(
            model="whalebone-nano", max_tokens=8, messages=[{"role": "user", "content": "Hi"}],
            extra_body={"thinking": {"type": "disabled"}})
        assert getattr(without.choices[0].message, "reasoning_content", None) in (None, "")
        try:
            client.chat.completions.create(model="gpt-5", max_tokens=8,
                                           messages=[{"role": "user", "content": "Hi"}])
        except openai.NotFoundError as e:
            assert "gpt-5" in str(e) and "whalebone-nano" in str(e)
        else:
            raise AssertionError("an unknown model must be a 404")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    lines = [line for line in err.splitlines() if " /v1/" in line]
    assert [line.split()[2:5] for line in lines] == [
        ["GET", "/v1/models", "200"], ["POST", "/v1/chat/completions", "200"],
        ["POST", "/v1/chat/completions", "200"], ["POST", "/v1/chat/completions", "404"]]
    assert " tokens (" in lines[1] and " cached) +" in lines[1] and lines[1].endswith(" ms")


def test_serve_help_says_thinking_is_on_and_how_to_turn_it_off() -> None:
    done = subprocess.run(_cli("serve", "--help"), capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "300"})
    assert "Thinking is on by default" in done.stdout
    assert '"thinking": {"type": "disabled"}' in done.stdout
