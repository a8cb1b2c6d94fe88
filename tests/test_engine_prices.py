from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from whalebone.engine.prices import PriceTable, UnknownPrice


def test_prices_are_dated() -> None:
    table = PriceTable()
    april = table.lookup("deepseek-v4-flash", dt.date(2026, 5, 1))
    autumn = table.lookup("deepseek-v4-flash", dt.date(2026, 11, 23))
    assert (april.cache_miss, autumn.cache_miss) == (0.14, 0.22)
    cost = table.cost("deepseek-v4-pro", cache_hit_tokens=1_000_000, cache_miss_tokens=0,
                      completion_tokens=1_000_000, when=dt.date(2026, 9, 1))
    assert cost == pytest.approx(0.022 + 1.98)
    assert table.cost("deepseek-v4-pro", cache_hit_tokens=0, cache_miss_tokens=10**6,
                      completion_tokens=0, when=dt.date(2026, 9, 1), peak=True) == 1.32


def test_unknown_model_or_date_is_an_error() -> None:
    with pytest.raises(UnknownPrice, match="no price known for model 'gpt-9'"):
        PriceTable().lookup("gpt-9")
    with pytest.raises(UnknownPrice):
        PriceTable().lookup("deepseek-v4-pro", dt.date(2025, 1, 1))


def test_a_file_overrides_and_extends(tmp_path: Path) -> None:
    f = tmp_path / "prices.toml"
    f.write_text('[[prices]]\nmodel = "deepseek-v4-flash"\nsince = 2026-08-16\n'
                 "cache_hit = 0.01\ncache_miss = 0.3\noutput = 0.9\n"
                 '[[prices]]\nmodel = "my-vllm"\nsince = 2026-01-01\n'
                 "cache_hit = 0\ncache_miss = 0.05\noutput = 0.1\n", encoding="utf-8")
    table = PriceTable.from_file(f)
    assert table.lookup("deepseek-v4-flash", dt.date(2026, 9, 1)).cache_miss == 0.3
    assert table.lookup("deepseek-v4-pro", dt.date(2026, 9, 1)).cache_miss == 0.66
    assert table.lookup("my-vllm").output == 0.1
