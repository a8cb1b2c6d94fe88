"""Per-million-token prices, dated, so every usage record can be priced.

Prices change; they are data, not code. The built-in table holds DeepSeek's published V4 prices
(source: DeepSeek API docs, "Models & Pricing", as gathered in the team's landscape notes of late
2026: from 2026-08-16, off-peak, V4-Flash 0.007 / 0.22 / 0.66 and V4-Pro 0.022 / 0.66 / 1.98 USD
per million tokens for cache hit / cache miss / output, peak hours double; V4-Flash in April
2026 was 0.0028 / 0.14 / 0.28). A deployment overrides or extends it with a TOML or JSON file of
the same shape. The bundled engine runs on your own machine and costs nothing per token.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, Field

from whalebone.core.errors import WhaleboneError


class Price(BaseModel):
    """USD per million tokens, valid from ``since`` (inclusive) on."""

    model: str
    since: dt.date
    cache_hit: float = Field(ge=0)
    cache_miss: float = Field(ge=0)
    output: float = Field(ge=0)
    peak_multiplier: float = Field(1.0, ge=0)  # applied by callers that know it is peak time
    note: str = ""


BUILTIN: list[Price] = [
    Price(model="deepseek-v4-flash", since=dt.date(2026, 4, 1), cache_hit=0.0028,
          cache_miss=0.14, output=0.28, note="V4-Flash launch pricing"),
    Price(model="deepseek-v4-flash", since=dt.date(2026, 8, 16), cache_hit=0.007,
          cache_miss=0.22, output=0.66, peak_multiplier=2.0, note="off-peak; peak doubles"),
    Price(model="deepseek-v4-pro", since=dt.date(2026, 8, 16), cache_hit=0.022,
          cache_miss=0.66, output=1.98, peak_multiplier=2.0, note="off-peak; peak doubles"),
    Price(model="whalebone-local", since=dt.date(2026, 1, 1), cache_hit=0.0, cache_miss=0.0,
          output=0.0, note="the bundled engine: your own hardware"),
]


class UnknownPrice(WhaleboneError, KeyError):
    """No price is known for a model at a date: spend cannot be bounded, so it is an error."""


class PriceTable:
    """Look up the price in force for a model on a date."""

    def __init__(self, prices: Iterable[Price] = BUILTIN) -> None:
        self._prices = sorted(prices, key=lambda p: (p.model, p.since))

    @classmethod
    def from_file(cls, path: str | Path, *, extend_builtin: bool = True) -> PriceTable:
        """Load ``{"prices": [{model, since, cache_hit, cache_miss, output}, …]}`` (.toml/.json);
        entries override built-in ones with the same model and date."""
        text = Path(path).read_text(encoding="utf-8")
        data = tomllib.loads(text) if str(path).endswith(".toml") else json.loads(text)
        loaded = [Price.model_validate(p) for p in data.get("prices", [])]
        keys = {(p.model, p.since) for p in loaded}
        base = [p for p in BUILTIN if (p.model, p.since) not in keys] if extend_builtin else []
        return cls([*base, *loaded])

    def lookup(self, model: str, when: dt.date | None = None) -> Price:
        when = when or dt.datetime.now(dt.UTC).date()
        found = [p for p in self._prices if p.model == model and p.since <= when]
        if not found:
            raise UnknownPrice(f"no price known for model {model!r} on {when.isoformat()}")
        return found[-1]

    def cost(self, model: str, *, cache_hit_tokens: int, cache_miss_tokens: int,
             completion_tokens: int, when: dt.date | None = None, peak: bool = False) -> float:
        """USD for one call."""
        p = self.lookup(model, when)
        usd = (cache_hit_tokens * p.cache_hit + cache_miss_tokens * p.cache_miss
               + completion_tokens * p.output) / 1e6
        return usd * (p.peak_multiplier if peak else 1.0)
