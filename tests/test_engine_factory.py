"""open_engine specs and router files."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from whalebone.engine.base import EngineAuthError, EngineError, GenerationRequest
from whalebone.engine.clients import ChatEngine, DeepSeekEngine, RawCompletionEngine
from whalebone.engine.clients.router import Router
from whalebone.engine.factory import EngineSpecError, open_engine


def test_remote_specs_build_the_right_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test")
    monkeypatch.delenv("DEEPSEEK_BASE_URL", raising=False)
    ds = open_engine("deepseek:deepseek-v4-pro")
    assert isinstance(ds, DeepSeekEngine) and ds.model == "deepseek-v4-pro"
    assert ds.name == "deepseek" and not ds.accepts_prompt
    assert open_engine("deepseek").model == "deepseek-v4-flash"
    for kind in ("vllm", "sglang", "whalebone"):
        raw = open_engine(f"{kind}:http://gpu1:8000/v1", model="v4")
        assert isinstance(raw, RawCompletionEngine) and raw.flavour == kind
        assert raw.name == f"{kind}@http://gpu1:8000" and raw.accepts_prompt
    oa = open_engine("openai:https://example.test/v1", model="gpt-x", api_key="k")
    assert isinstance(oa, ChatEngine) and oa.flavour == "openai" and oa.model == "gpt-x"


@pytest.mark.parametrize(("spec", "options", "words"), [
    ("llama:x", {}, "unknown engine"),
    ("vllm", {}, "needs an http(s) URL"),
    ("vllm:gpu1:8000", {}, "needs an http(s) URL"),
    ("openai:https://example.test/v1", {}, "needs model="),
    ("router", {}, "router needs a file"),
    ("whalebone:http://h:1", {"colour": "red"}, "colour"),
])
def test_bad_specs_say_what_is_wrong(spec: str, options: dict[str, str], words: str) -> None:
    with pytest.raises(EngineSpecError) as e:
        open_engine(spec, **options)
    assert words in str(e.value)


def test_scripted_spec_replays_a_json_file(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text('["Hello.<｜end▁of▁sentence｜>"]', encoding="utf-8")
    engine = open_engine(f"scripted:{script}")
    fin = anyio.run(engine.generate, GenerationRequest(prompt="p"))
    assert (fin.text, fin.finish_reason) == ("Hello.", "stop")
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    with pytest.raises(EngineSpecError, match="JSON list"):
        open_engine(f"scripted:{tmp_path / 'bad.json'}")
    with pytest.raises(EngineSpecError, match="cannot read"):
        open_engine(f"scripted:{tmp_path / 'missing.json'}")


def test_replay_spec_answers_by_the_sessions_turn_with_the_specs_options(tmp_path: Path) -> None:
    script = tmp_path / "replay.jsonl"
    script.write_text('"First.<｜end▁of▁sentence｜>"\n"Second.<｜end▁of▁sentence｜>"\n')
    engine = open_engine(f"replay:{script}?model=m1", delay=0.5)
    assert (engine.name, engine.model, engine.delay) == ("replay", "m1", 0.5)
    engine.delay = 0.0
    second = "<｜begin▁of▁sentence｜><｜User｜>a<｜Assistant｜>x<｜User｜>b<｜Assistant｜>"
    fin = anyio.run(engine.generate, GenerationRequest(prompt=second))
    assert fin.text == "Second."  # by turn, though it is the first call
    with pytest.raises(EngineSpecError, match="unknown scripted-engine option 'pace'"):
        open_engine(f"replay:{script}?pace=1")


@pytest.mark.slow
def test_random_spec_builds_the_bundled_engine_with_random_weights(tmp_path: Path) -> None:
    engine = open_engine("random:micro", cache_dir=tmp_path)
    assert type(engine).__name__ == "BundledEngine" and engine.name == "bundled"
    with pytest.raises(EngineError, match="no checkpoint folder"):
        open_engine(f"bundled:{tmp_path / 'nothing'}")


def test_deepseek_spec_without_a_key_is_an_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    with pytest.raises(EngineAuthError):
        open_engine("deepseek")


def test_router_file_builds_tiers_and_shares_engines(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test")
    monkeypatch.setenv("PREMIUM_KEY", "pk")
    path = tmp_path / "router.toml"
    path.write_text('default_tier = "standard"\nfirst_delta_timeout = 30\n[tiers]\n'
                    'bulk = ["deepseek:deepseek-v4-flash", "vllm:http://gpu1:8000"]\n'
                    'standard = ["deepseek:deepseek-v4-pro", "deepseek:deepseek-v4-flash"]\n'
                    'premium = [{ spec = "openai:https://example.test/v1", model = "gpt-x",'
                    ' api_key_env = "PREMIUM_KEY" }]\n')
    router = open_engine(f"router:{path}")
    assert isinstance(router, Router)
    assert router.default_tier == "standard" and router.first_delta_timeout == 30
    assert router.tiers["bulk"][0] is router.tiers["standard"][1]  # one Flash engine
    assert router.tiers["premium"][0].transport.client.headers["authorization"] == "Bearer pk"
    assert router.accepts_prompt is False  # chat engines inside: callers send messages too


@pytest.mark.parametrize(("text", "words"), [
    ("tiers = 3", "[tiers]"),
    ("[tiers]\nbulk = []", "non-empty list"),
    ("[tiers]\nbulk = [{ model = 'x' }]", "spec ="),
    ("[tiers]\nbulk = [{ spec = 'openai:https://h/v1', model = 'x', api_key_env = 'NOPE_1' }]",
     "NOPE_1"),
    ("[tiers\nbulk", "not valid TOML"),
    ("[tiers]\nbulk = ['router:x.toml']", "cannot contain a router"),
])
def test_bad_router_files_are_refused_clearly(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(EngineSpecError) as e:
        open_engine(f"router:{path}")
    assert words in str(e.value)
    with pytest.raises(EngineSpecError, match="cannot read"):
        open_engine(f"router:{tmp_path / 'missing.toml'}")
