"""Token counts: the one shape of "how many tokens a model call took" in every room.

A call's prompt is split into cache hits (served from the prefix cache, billed cheap) and misses
(prefilled, billed in full); the completion is what the model wrote. The engine's records, the
session store's usage rows, the agent's usage events and the budget ledger's actual costs all
carry these counts by extending :class:`TokenCounts` (so their JSON and their attributes keep
the same names), and convert through :meth:`TokenCounts.counts`, never field by field.

The engine interface's ``Usage`` is the one exception in spelling: it is DeepSeek's wire shape
(``prompt_cache_hit_tokens``, …), so it converts with ``Usage.counts`` / ``Usage.of``.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, model_validator


class TokenCounts(BaseModel):
    """The tokens of one model call (or a sum of calls). ``prompt_tokens`` is what the engine
    reported, normally ``cache_hit_tokens + cache_miss_tokens``."""

    prompt_tokens: int = 0
    cache_hit_tokens: int = 0
    cache_miss_tokens: int = 0
    completion_tokens: int = 0

    @model_validator(mode="before")
    @classmethod
    def _prompt_is_hits_and_misses(cls, data: Any) -> Any:
        # Where only the split is given (a ledger's actual cost), the prompt is its sum.
        if isinstance(data, dict) and "prompt_tokens" not in data:
            hits, misses = data.get("cache_hit_tokens", 0), data.get("cache_miss_tokens", 0)
            if isinstance(hits, int) and isinstance(misses, int):
                data = {**data, "prompt_tokens": hits + misses}
        return data

    @property
    def hit_rate(self) -> float:
        """Share of the prompt served from the prefix cache (0 for an empty prompt)."""
        return self.cache_hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def counts(self) -> TokenCounts:
        """Just the counts, whatever record carries them."""
        return TokenCounts(prompt_tokens=self.prompt_tokens,
                           cache_hit_tokens=self.cache_hit_tokens,
                           cache_miss_tokens=self.cache_miss_tokens,
                           completion_tokens=self.completion_tokens)

    def count_fields(self) -> dict[str, int]:
        """The counts as keyword arguments, to build a record that extends this type."""
        return {name: getattr(self, name) for name in TokenCounts.model_fields}

    def set_counts(self, counts: TokenCounts) -> Self:
        """Copy ``counts`` into this (mutable) record."""
        for name in TokenCounts.model_fields:
            setattr(self, name, getattr(counts, name))
        return self

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(**{name: getattr(self, name) + getattr(other, name)
                              for name in TokenCounts.model_fields})
