from __future__ import annotations

import pytest
from conftest import VECTOR_MODES, load_vector

from whalebone.dsml import tokens as T
from whalebone.dsml.encoder import encode_messages

pytest.importorskip("tokenizers")
from whalebone.dsml.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_every_format_token_is_one_id(tok) -> None:
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 129280)
    for token in (T.BOS, T.EOS, T.USER, T.ASSISTANT, T.LATEST_REMINDER, T.THINK_START,
                  T.THINK_END, T.DSML, *T.TASK_TOKENS.values()):
        ids = tok.encode(token)
        assert len(ids) == 1 and ids[0] in tok.special_ids, token


@pytest.mark.parametrize(("n", "mode"), VECTOR_MODES)
def test_rendered_prompts_tokenize_with_specials_as_single_ids(tok, n: int, mode: str) -> None:
    messages, _ = load_vector(n)
    prompt = encode_messages(messages, mode)
    ids = tok.encode(prompt)
    assert tok.decode(ids) == prompt  # lossless
    assert ids[0] == tok.bos_id and ids.count(tok.eos_id) == prompt.count(T.EOS)
    assert ids.count(tok.token_id(T.DSML)) == prompt.count(T.DSML)
