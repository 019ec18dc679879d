"""`_fastgw.memory_stores`: named memory bounds after Kong's lua_shared_dict, in nginx's sizes."""

from __future__ import annotations

import pytest

from fastgw.config import ConfigError, parse_config


def stores(section: str) -> tuple[tuple[str, int], ...]:
    config = parse_config(f'_format_version: "3.0"\n_fastgw: {section}\n', env={})
    return config.settings.memory_stores


def test_kong_db_cache_is_always_there_at_kongs_size_and_may_be_resized() -> None:
    assert stores("{}") == (("kong_db_cache", 128 * 1024 * 1024),)
    assert dict(stores("{memory_stores: {kong_db_cache: 64m, my_cache: 512k, raw: 4096}}")) == {
        "kong_db_cache": 64 * 1024 * 1024,
        "my_cache": 512 * 1024,
        "raw": 4096,
    }
    assert dict(stores("{memory_stores: {big: 1G}}"))["big"] == 1024**3


def test_a_size_that_is_none_is_an_error_naming_the_store() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(
            '_format_version: "3.0"\n_fastgw: {memory_stores: {a: 10x, b: 0, c: -1k}}\n', env={}
        )
    message = "must be a size: bytes, or a number with k, m or g (e.g. 128m)"
    assert raised.value.problems == [
        ("_fastgw.memory_stores.a", message),
        ("_fastgw.memory_stores.b", message),
        ("_fastgw.memory_stores.c", message),
    ]
    with pytest.raises(ConfigError) as raised:
        parse_config('_format_version: "3.0"\n_fastgw: {memory_stores: [a]}\n', env={})
    assert raised.value.problems == [
        (
            "_fastgw.memory_stores",
            "must be a mapping of names to sizes (e.g. {kong_db_cache: 128m})",
        )
    ]
