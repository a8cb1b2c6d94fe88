from __future__ import annotations

import json

import pytest

from whalebone.dsml import tokens as T
from whalebone.dsml.tokenizer import load_tokenizer
from whalebone.engine.runtime.vocab import VocabError, VocabMap

V4 = 129_280


def test_identity_maps_every_id_to_itself() -> None:
    vm = VocabMap.identity()
    assert vm.is_identity and vm.size == V4 and vm.unk_id is None
    assert vm.to_model([0, 1, 5000, V4 - 1]) == [0, 1, 5000, V4 - 1]
    assert vm.to_v4([0, 1, 5000, V4 - 1]) == [0, 1, 5000, V4 - 1]
    assert vm.sampleable_mask() is None


def test_build_keeps_every_special_then_unk_then_ordinary_ids_by_frequency() -> None:
    corpus = [[0, 50, 50, 50, 7, 7, 1], [0, 9, 7, 50, 1]]
    vm = VocabMap.build(corpus, size=6, special_ids=[0, 1, 128000])
    # specials in V4 order, <unk>, then 50 (4x), 7 (3x); 9 (1x) does not fit
    assert vm.model_to_v4 == [0, 1, 128000, -1, 50, 7]
    assert vm.unk_id == 3
    assert vm.to_model([0, 50, 9, 7, 1]) == [0, 4, 3, 5, 1]
    assert vm.to_v4([0, 4, 5, 1]) == [0, 50, 7, 1]


def test_build_breaks_frequency_ties_by_id_so_builds_are_deterministic() -> None:
    a = VocabMap.build([[30, 20, 10]], size=3, special_ids=[0])
    b = VocabMap.build([[10, 30, 20]], size=3, special_ids=[0])
    assert a == b and a.model_to_v4 == [0, -1, 10]


def test_build_from_rendered_prompts_keeps_format_tokens_single_ids() -> None:
    tok = load_tokenizer()
    texts = [f"{T.BOS}You help.{T.USER}hello there{T.ASSISTANT}{T.THINK_END}Hi!{T.EOS}"] * 3
    vm = VocabMap.build_from_texts(texts, size=2000)
    assert vm.size == len(tok.special_ids) + 1 + len(set(tok.encode(texts[0])) - tok.special_ids)
    ids = tok.encode(texts[0])
    assert vm.coverage(ids) == 1.0
    assert vm.to_v4(vm.to_model(ids)) == ids
    assert vm.to_model([tok.bos_id, tok.eos_id]) == [0, 1]  # BOS/EOS keep V4's ids


def test_unknown_ids_become_unk_and_unk_is_never_sampleable() -> None:
    vm = VocabMap.build([[10, 11]], size=4, special_ids=[0])
    assert vm.to_model([12345]) == [vm.unk_id]
    mask = vm.sampleable_mask()
    assert mask is not None and not bool(mask[vm.unk_id]) and int(mask.sum()) == vm.size - 1
    with pytest.raises(VocabError, match="unk"):
        vm.to_v4([vm.unk_id])


def test_ids_outside_v4_are_refused() -> None:
    vm = VocabMap.identity()
    with pytest.raises(VocabError, match="outside"):
        vm.to_model([V4])
    with pytest.raises(VocabError, match="negative"):
        vm.to_model([-1])
    with pytest.raises(VocabError, match="no V4 token"):
        vm.to_v4([V4 + 3])


def test_save_and_load_round_trip(tmp_path) -> None:
    vm = VocabMap.build([[5, 6, 6]], size=5, special_ids=[0, 1])
    path = vm.save(tmp_path)
    assert path.name == "vocab.json"
    assert VocabMap.load(tmp_path) == vm
    assert not list(tmp_path.glob(".vocab-*"))  # the temp file was renamed into place


def test_a_folder_without_a_table_has_none(tmp_path) -> None:
    assert VocabMap.load(tmp_path) is None


@pytest.mark.parametrize("content, why", [
    ("not json", "not a readable"),
    (json.dumps({"format": "other"}), "not a whalebone-vocab"),
    (json.dumps({"format": "whalebone-vocab/1", "model_to_v4": "x"}), "list of integers"),
    (json.dumps({"format": "whalebone-vocab/1", "model_to_v4": [0, 0, -1]}), "twice"),
    (json.dumps({"format": "whalebone-vocab/1", "model_to_v4": [0, 1]}), "needs an <unk>"),
    (json.dumps({"format": "whalebone-vocab/1", "model_to_v4": [0, -1, -1]}), "at most one"),
    (json.dumps({"format": "whalebone-vocab/1", "unk_id": 0, "model_to_v4": [0, -1]}),
     "does not match"),
])
def test_malformed_tables_are_clear_errors(tmp_path, content: str, why: str) -> None:
    (tmp_path / "vocab.json").write_text(content, encoding="utf-8")
    with pytest.raises(VocabError, match=why):
        VocabMap.load(tmp_path)


def test_a_table_too_small_for_the_specials_is_refused() -> None:
    with pytest.raises(VocabError, match="cannot hold"):
        VocabMap.build([], size=2, special_ids=[0, 1, 2])


def test_for_size_keeps_the_prompt_format_markers_in_a_tiny_table() -> None:
    tok = load_tokenizer()
    vm = VocabMap.for_size(512)
    assert vm.size == 512 and vm.unk_id is not None
    for mark in (T.BOS, T.EOS, T.USER, T.ASSISTANT, T.THINK_START, T.THINK_END):
        assert vm.to_model([tok.token_id(mark)]) != [vm.unk_id]
    assert VocabMap.for_size(V4).is_identity
