"""The DeepSeek/OpenAI chat client and the raw-completion client, against the real server on a
loopback port and against real HTTP servers replaying other servers' answers."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import httpx
import pytest
from conftest import stream_sync
from serving import (
    ANSWER_SUNNY,
    CALL_WEATHER,
    WEATHER_TOOLS,
    ObservedEngine,
    dead_port,
    health,
    replaying,
    serving,
    silent_port,
    sse_body,
    wait_for,
)

from whalebone.dsml import Transcript, parse_completion
from whalebone.dsml import tokens as T
from whalebone.engine.base import (
    EngineAuthError,
    EngineRequestError,
    EngineUnavailable,
    GenerationRequest,
    TextDelta,
)
from whalebone.engine.clients import ChatEngine, RawCompletionEngine, RetryPolicy
from whalebone.engine.clients.deepseek import DeepSeekEngine
from whalebone.engine.scripted import ScriptedEngine

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, deadline=10)


def test_chat_client_completes_a_tool_conversation_and_sends_reasoning_back() -> None:
    server_engine = ScriptedEngine([CALL_WEATHER, ANSWER_SUNNY])
    with serving(server_engine, api_key="k") as (base, _):
        client = ChatEngine(base + "/v1", model="deepseek-v4-flash", api_key="k", retry=FAST)
        messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
        deltas, first = stream_sync(client, GenerationRequest(messages=messages,
                                                              tools=WEATHER_TOOLS))
        # Re-emitted in V4 form: one parser reads every engine's output.
        assert "".join(deltas) == first.text
        parsed = parse_completion(first.text + T.EOS, "thinking", tools=WEATHER_TOOLS)
        assert parsed.reasoning_content == "I should look the weather up."
        [call] = parsed.valid_calls
        assert (call.name, call.parsed_arguments) == ("get_weather", {"city": "Paris"})
        assert first.finish_reason == "stop" and first.usage.prompt_cache_hit_tokens == 0

        assistant = parsed.to_openai()
        assistant["tool_calls"] = [call.to_openai("c0")]
        messages += [assistant, {"role": "tool", "tool_call_id": "c0", "content": "sunny"}]
        _, second = stream_sync(client, GenerationRequest(messages=messages, tools=WEATHER_TOOLS))
        anyio.run(client.aclose)
    assert parse_completion(second.text + T.EOS, "thinking").content == "It is sunny in Paris."
    assert second.usage.prompt_cache_hit_tokens > first.usage.prompt_tokens
    assert second.usage.prompt_cache_hit_tokens + second.usage.prompt_cache_miss_tokens == \
        second.usage.prompt_tokens
    assert second.model == "whalebone-local"
    # DeepSeek's rule: the reasoning behind the call went back to the server.
    assert server_engine.requests[1].messages[1]["reasoning_content"] == \
        "I should look the weather up."


def test_raw_client_completes_a_tool_conversation_with_its_own_rendering() -> None:
    server_engine = ScriptedEngine([CALL_WEATHER, ANSWER_SUNNY])
    with serving(server_engine) as (base, _):
        client = RawCompletionEngine(base, flavour="whalebone", retry=FAST)
        t = Transcript("thinking")
        t.append({"role": "system", "content": "You are terse.", "tools": WEATHER_TOOLS},
                 {"role": "user", "content": "Weather in Paris?"})
        prompt = t.render().text
        _, first = stream_sync(client, GenerationRequest(prompt=prompt, stop=[T.EOS]))
        parsed = parse_completion(first.text + T.EOS, "thinking", tools=WEATHER_TOOLS)
        [call] = parsed.valid_calls
        assistant = parsed.to_openai()
        assistant["tool_calls"] = [call.to_openai("c0")]
        t.append(assistant, {"role": "tool", "tool_call_id": "c0", "content": "sunny"})
        _, second = stream_sync(client, GenerationRequest(prompt=prompt + t.render().text))
        anyio.run(client.aclose)
    # The exact bytes whalebone rendered reached the engine.
    assert server_engine.requests[0].prompt == prompt
    assert parse_completion(second.text + T.EOS, "thinking").content == "It is sunny in Paris."
    assert second.usage.prompt_cache_hit_tokens > first.usage.prompt_tokens
    assert client.model == "whalebone-local"  # asked /v1/models


def test_deepseek_stream_quirks_are_assembled_and_re_emitted() -> None:
    """Interleaved tool-call deltas by index, 1-3 character chunks, an empty-choices chunk,
    usage with only cached_tokens: DeepSeek's stream as measured by others."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"model": "deepseek-v4-flash", "choices": [{"index": 0, "delta": delta,
                                                           "finish_reason": finish}]}

    events: list[Any] = [chunk({"role": "assistant", "content": None})]
    events += [chunk({"reasoning_content": c}) for c in ("Tw", "o ", "cal", "ls")]
    events.append({"model": "deepseek-v4-flash", "choices": []})
    events.append(chunk({"tool_calls": [{"index": 0, "id": "a", "function": {
        "name": "get_weather", "arguments": ""}}]}))
    events.append(chunk({"tool_calls": [{"index": 1, "id": "b", "function": {
        "name": "get_weather", "arguments": '{"ci'}}]}))
    events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"c'}}]}))
    events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ity"'}}]}))
    events.append(chunk({"tool_calls": [{"index": 1, "function": {"arguments": 'ty": "Rome"}'}}]}))
    events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": ': "Oslo"}'}}]}))
    events.append(chunk({}, "tool_calls"))
    events.append({"choices": [], "usage": {"prompt_tokens": 2000, "completion_tokens": 30,
                                            "prompt_tokens_details": {"cached_tokens": 1792}}})
    events.append("[DONE]")
    reply = (200, {"content-type": "text/event-stream"}, sse_body(*events))
    with replaying([reply]) as (base, received):
        client = DeepSeekEngine(api_key="sk-test", base_url=base, retry=FAST)
        _, fin = stream_sync(client, GenerationRequest(
            messages=[{"role": "user", "content": "x"}], tools=WEATHER_TOOLS,
            reasoning_effort="max"))
    parsed = parse_completion(fin.text + T.EOS, "thinking", tools=WEATHER_TOOLS)
    assert parsed.reasoning_content == "Two calls"
    assert [c.parsed_arguments for c in parsed.valid_calls] == [{"city": "Oslo"},
                                                                {"city": "Rome"}]
    assert fin.usage.prompt_cache_hit_tokens == 1792
    assert fin.usage.prompt_cache_miss_tokens == 208
    sent = received[0]
    assert sent["thinking"] == {"type": "enabled"} and sent["reasoning_effort"] == "max"
    assert sent["stream"] is True and sent["tools"] == WEATHER_TOOLS


def test_length_finish_inside_a_tool_call_is_never_salvaged() -> None:
    events = [{"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]},
              {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "a",
                                                                  "function": {
                                                                      "name": "get_weather",
                                                                      "arguments": '{"ci'}}]}}]},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
               "usage": {"prompt_tokens": 10, "completion_tokens": 5}}, "[DONE]"]
    with replaying([(200, {}, sse_body(*events))]) as (base, _):
        client = ChatEngine(base, model="m", retry=FAST)
        _, fin = stream_sync(client, GenerationRequest(messages=[{"role": "user", "content": "x"}]))
    assert fin.finish_reason == "length"
    assert T.DSML not in fin.text  # no call to run from cut arguments


def test_chat_client_refuses_to_drop_reasoning_of_a_tool_call() -> None:
    client = ChatEngine("http://127.0.0.1:9", model="m")
    messages = [{"role": "user", "content": "x"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c", "type": "function",
                     "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "r"}]
    with pytest.raises(EngineRequestError, match="reasoning_content"):
        stream_sync(client, GenerationRequest(messages=messages))
    with pytest.raises(EngineRequestError, match="needs messages"):
        stream_sync(client, GenerationRequest(prompt="p"))
    plain = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
             {"role": "user", "content": "z"}]
    sent = client.api_messages(GenerationRequest(messages=plain))
    assert sent[1] == {"role": "assistant", "content": "y", "reasoning_content": ""}


def test_server_rejections_are_clear_and_not_retried() -> None:
    with serving(ScriptedEngine([]), api_key="right") as (base, _):
        wrong_key = ChatEngine(base + "/v1", model="m", api_key="wrong", retry=FAST)
        with pytest.raises(EngineAuthError, match=r"401.*incorrect API key"):
            stream_sync(wrong_key, GenerationRequest(messages=[{"role": "user", "content": "x"}]))
        assert wrong_key.transport.attempts_made == 1
        bad = RawCompletionEngine(base, flavour="whalebone", model="m", api_key="right",
                                  retry=FAST)
        with pytest.raises(EngineRequestError, match=r"400.*max_tokens"):
            stream_sync(bad, GenerationRequest(prompt="p", max_tokens=2_000_000))
        assert bad.transport.attempts_made == 1


def test_429_and_5xx_are_retried_with_backoff_honouring_retry_after() -> None:
    ok = sse_body({"choices": [{"index": 0, "text": "done", "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 1}}, "[DONE]")
    replies = [(429, {"retry-after": "0.2"}, b'{"error": {"message": "slow down"}}'),
               (503, {}, b"overloaded"),
               (200, {"content-type": "text/event-stream"}, ok)]
    with replaying(replies) as (base, received):
        client = RawCompletionEngine(base, model="m", retry=FAST)
        started = time.monotonic()
        deltas, fin = stream_sync(client, GenerationRequest(prompt="p"))
        elapsed = time.monotonic() - started
    assert deltas == ["done"] and fin.finish_reason == "stop"
    assert len(received) == 3 and client.transport.attempts_made == 3
    assert elapsed >= 0.05  # Retry-After of 0.2 s, capped at max_delay (0.05 s)
    body = received[0]  # what vLLM needs to keep V4's bytes intact
    assert body["skip_special_tokens"] is False and body["add_special_tokens"] is False


def test_giving_up_after_the_attempts_says_so() -> None:
    with replaying([(502, {}, b"bad gateway")] * 3) as (base, _):
        client = RawCompletionEngine(base, model="m", retry=FAST)
        with pytest.raises(EngineUnavailable, match=r"502.*gave up after 3 tries"):
            stream_sync(client, GenerationRequest(prompt="p"))


def test_dead_port_is_unavailable_and_hung_server_hits_the_deadline() -> None:
    client = RawCompletionEngine(dead_port(), model="m", retry=FAST)
    with pytest.raises(EngineUnavailable, match="cannot connect"):
        stream_sync(client, GenerationRequest(prompt="p"))
    with silent_port() as url:
        hung = RawCompletionEngine(url, model="m",
                                   retry=RetryPolicy(attempts=5, base_delay=0.01, deadline=0.6))
        started = time.monotonic()
        with pytest.raises(EngineUnavailable, match=r"timed out|deadline"):
            stream_sync(hung, GenerationRequest(prompt="p"))
        assert time.monotonic() - started < 3


def test_cancelling_the_caller_closes_the_connection_and_the_server_stops() -> None:
    engine = ObservedEngine(lambda _: "w" * 3000 + T.EOS, delta_chars=1, delay=0.005)
    with serving(engine) as (base, _):
        client = RawCompletionEngine(base, flavour="whalebone", model="m", retry=FAST)

        async def go() -> int:
            got = 0
            with anyio.CancelScope() as scope:  # the caller gives up after 5 deltas
                async for ev in client.stream(GenerationRequest(prompt="p", max_tokens=4000)):
                    got += isinstance(ev, TextDelta)
                    if got == 5:
                        scope.cancel()
            await client.aclose()
            return got

        got = anyio.run(go)
        assert got == 5
        wait_for(lambda: engine.outcomes == ["closed"] and health(base)["running"] == 0)


def test_deepseek_needs_a_key_and_openai_flavour_sends_no_thinking_switch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    with pytest.raises(EngineAuthError, match="DEEPSEEK_API_KEY"):
        DeepSeekEngine()
    events = [{"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]},
              "[DONE]"]
    with replaying([(200, {}, sse_body(*events))]) as (base, received):
        client = ChatEngine(base, model="gpt-x", flavour="openai", retry=FAST)
        msgs = [{"role": "user", "content": "x"},
                {"role": "assistant", "content": "y", "reasoning_content": "secret"},
                {"role": "user", "content": "z"}]
        _, fin = stream_sync(client, GenerationRequest(messages=msgs, thinking_mode="chat"))
    assert fin.text == "hi"
    assert "thinking" not in received[0]
    assert all("reasoning_content" not in m for m in received[0]["messages"])
    assert json.dumps(received[0]).count("secret") == 0


def test_a_chat_engine_can_itself_be_served_and_its_answer_survives_the_round_trip() -> None:
    """serve --engine openai:URL: the chat client's re-emitted V4 text is parsed back by the
    outer server into the same OpenAI answer the inner server gave."""
    inner_engine = ScriptedEngine([CALL_WEATHER])
    with serving(inner_engine) as (inner, _):
        chat_engine = ChatEngine(inner + "/v1", model="inner-model", retry=FAST)
        with serving(chat_engine) as (outer, _):
            r = httpx.post(outer + "/v1/chat/completions", timeout=10, json={
                "model": "m", "tools": WEATHER_TOOLS,
                "messages": [{"role": "user", "content": "Weather in Paris?"}]})
    assert r.status_code == 200, r.text
    msg = r.json()["choices"][0]["message"]
    assert msg["reasoning_content"] == "I should look the weather up."
    assert json.loads(msg["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert r.json()["model"] == "inner-model"
    assert r.json()["choices"][0]["finish_reason"] == "tool_calls"


def test_sglang_flavour_and_token_id_prompts_send_what_those_servers_need() -> None:
    from whalebone.dsml.tokenizer import load_tokenizer

    done = sse_body({"choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}]},
                    {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 1,
                                              "prompt_tokens_details": {"cached_tokens": 4}}},
                    "[DONE]")
    prompt = T.BOS + T.USER + "Hi" + T.ASSISTANT + T.THINK_END
    with replaying([(200, {}, done), (200, {}, done)]) as (base, received):
        sglang = RawCompletionEngine(base + "/v1", flavour="sglang", model="v4", retry=FAST)
        _, fin = stream_sync(sglang, GenerationRequest(prompt=prompt, session_id="s9"))
        ids = RawCompletionEngine(base, flavour="vllm", model="v4", prompt_format="ids",
                                  retry=FAST)
        stream_sync(ids, GenerationRequest(prompt=prompt))
    assert received[0]["prompt"] == prompt and received[0]["skip_special_tokens"] is False
    assert "add_special_tokens" not in received[0] and received[0]["user"] == "s9"
    assert received[1]["prompt"] == load_tokenizer().encode(prompt)
    assert (fin.usage.prompt_cache_hit_tokens, fin.usage.prompt_cache_miss_tokens) == (4, 3)
    assert fin.model == "v4" and fin.engine == f"sglang@{base}"
