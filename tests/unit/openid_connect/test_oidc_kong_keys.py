"""Every key of Kong's openid-connect schema has a status: read, ignored with a reason, or
accepted at Kong's default only. `kong_oidc_keys.json` lists the keys of Kong's published
schemas 3.4 to 3.15 with their default in the newest version that has them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from fastgw.errors import ConfigError
from fastgw.plugins.openid_connect.kong_keys import DEFAULT_ONLY, IGNORED
from fastgw.plugins.openid_connect.schema import from_mapping

ROOT = Path(__file__).resolve().parents[3]
KONG_KEYS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).with_name("kong_oidc_keys.json")).read_text()
)
ISSUER = "https://idp.example.test"


def kong_defaults(since_at_most: str | None = None) -> dict[str, Any]:
    """A plugin config as decK dumps one left at Kong's defaults."""
    config = {key: spec["default"] for key, spec in KONG_KEYS.items()}
    # Kong renamed consumer_claim to consumer_claims in 3.14: a dump has one of them
    config.pop("consumer_claim")
    config["issuer"] = ISSUER
    return config


def problems(config: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        from_mapping(config)
    except ConfigError as error:
        return error.problems
    return []


def test_the_key_list_is_kongs_whole_schema() -> None:
    assert len(KONG_KEYS) == 249
    assert {"issuer", "auth_methods", "consumer_claim", "consumer_claims"} <= set(KONG_KEYS)


def test_a_config_with_every_kong_key_at_its_default_loads() -> None:
    config = from_mapping(kong_defaults())
    # Kong's default auth_methods (every method) means every supported one
    assert config.auth_methods == {
        "client_credentials",
        "bearer",
    }  # no own client: no introspection
    assert problems({**kong_defaults(), "consumer_claim": ["sub"], "consumer_claims": None}) == []


def test_no_kong_key_is_an_unknown_field() -> None:
    for key, spec in KONG_KEYS.items():
        found = problems({"issuer": ISSUER, key: _other_than(spec["default"])})
        assert all(reason != "unknown field" for _, reason in found), (key, found)


@pytest.mark.parametrize("key", sorted(DEFAULT_ONLY))
def test_a_default_only_key_set_otherwise_is_not_supported_yet(key: str) -> None:
    value = _other_than(DEFAULT_ONLY[key])
    assert problems({"issuer": ISSUER, key: value}) == [(key, "not supported yet")]


@pytest.mark.parametrize("key", sorted(IGNORED))
def test_an_ignored_key_takes_any_value(key: str) -> None:
    assert problems({"issuer": ISSUER, key: _other_than(KONG_KEYS[key]["default"])}) == []


def test_the_tables_only_name_kong_keys_and_do_not_overlap() -> None:
    assert set(IGNORED) <= set(KONG_KEYS)
    assert set(DEFAULT_ONLY) <= set(KONG_KEYS)
    assert not set(IGNORED) & set(DEFAULT_ONLY)


def test_the_readme_gives_every_kong_key_a_status() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Every Kong openid-connect key", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([a-z0-9_]+)`", section))
    missing = sorted(set(KONG_KEYS) - listed)
    assert missing == [], f"README lists no status for {missing}"


def _other_than(default: Any) -> Any:
    """A value that is not `default` and that a type-checked key would still accept."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, (int, float)):
        return default + 1
    if isinstance(default, dict):
        first = sorted(default)[0]
        return {first: _other_than(default[first])}
    if isinstance(default, list):
        return [*default[:1], "x-other"] if default else ["x-other"]
    if isinstance(default, str):
        return default + "-other"
    return "x-other"
