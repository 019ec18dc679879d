"""Secrets kept out of the config file: Kong's `vaults:` entity and `{vault://...}` references.

Only Kong's `env` vault exists here; references resolve once, when the config loads.

A string value that is a whole reference, `{vault://env/idp-secret}`, is replaced by the
environment variable it names (`IDP_SECRET`: upper case, `-` read as `_`, as Kong's env vault
does), or by one key of the JSON object that variable holds (`{vault://env/pg-creds/password}`).
A `vaults:` entry gives the env vault another reference name and a variable prefix:

    vaults:
      - {name: env, prefix: my-env-vault, config: {prefix: MY_SECRET_}}

makes `{vault://my-env-vault/idp-secret}` read `MY_SECRET_IDP_SECRET`. As in Kong, a reference
must be the whole value ("Bearer {vault://...}" is an error, not a half-resolved string).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastgw.config.schema import Reader, join

REFERENCE_OPEN = "{vault://"
BUILT_IN_ENV_VAULT = "env"
# Kong's other vault backends: named, so that a config using one is told it is not supported
# rather than that the name is unknown
KONG_VAULT_BACKENDS = ("aws", "azure", "conjur", "gcp", "hcv", "konnect")


@dataclass(frozen=True, slots=True)
class EnvVault:
    """An env vault as references name it (`{vault://<name>/...}`)."""

    name: str
    variable_prefix: str  # Kong's `config.prefix`, prepended to the resource
    base64_decode: bool  # Kong's `config.base64_decode`


def read_vaults(raw: object, path: str, problems: list[tuple[str, str]]) -> dict[str, EnvVault]:
    """The vaults references may name: the built-in `env`, and every `vaults:` entry."""
    vaults = {BUILT_IN_ENV_VAULT: EnvVault(BUILT_IN_ENV_VAULT, "", False)}
    if raw is None:
        return vaults
    if not isinstance(raw, list):
        problems.append((path, "must be an array"))
        return vaults
    for index, item in enumerate(raw):
        reader = Reader(item, join(path, index), problems)
        backend = reader.string("name", required=True)
        name = reader.string("prefix", required=True)
        reader.string("description", allow_empty=True)
        reader.strings("tags")
        reader.ignore("id", "created_at", "updated_at")
        config = reader.mapping("config")
        variable_prefix = config.string("prefix", "", allow_empty=True)
        decode = config.boolean("base64_decode", False)
        # secret rotation: values are read once at load here, so there is nothing to refresh
        config.number("ttl", minimum=0)
        config.number("neg_ttl", minimum=0)
        config.number("resurrect_ttl", minimum=0)
        config.finish()
        reader.finish()
        if backend is not None and backend != BUILT_IN_ENV_VAULT:
            if backend in KONG_VAULT_BACKENDS:
                reader.error("name", f'the "{backend}" vault is not supported yet (only env)')
            else:
                reader.error("name", f'unknown vault "{backend}" (only env)')
            continue
        if name is None or backend is None:
            continue
        if name in vaults:
            reader.error("prefix", f'"{name}" is already the name of a vault')
            continue
        vaults[name] = EnvVault(name, variable_prefix, decode)
    return vaults


def resolve_references(
    value: Any,
    path: str,
    vaults: Mapping[str, EnvVault],
    env: Mapping[str, str],
    problems: list[tuple[str, str]],
) -> Any:
    """A copy of `value` with every vault reference replaced; problems carry the key path."""
    if isinstance(value, str):
        if REFERENCE_OPEN not in value:
            return value
        return _resolve(value, path or "(root)", vaults, env, problems)
    if isinstance(value, list):
        return [
            resolve_references(item, join(path, i), vaults, env, problems)
            for i, item in enumerate(value)
        ]
    if isinstance(value, dict):
        return {
            key: resolve_references(item, join(path, str(key)), vaults, env, problems)
            for key, item in value.items()
        }
    return value


def variable_name(vault: EnvVault, resource: str) -> str:
    """The environment variable a reference's resource names in `vault`."""
    return (vault.variable_prefix + resource).replace("-", "_").upper()


def _resolve(
    text: str,
    path: str,
    vaults: Mapping[str, EnvVault],
    env: Mapping[str, str],
    problems: list[tuple[str, str]],
) -> str:
    stripped = text.strip()
    if not (stripped.startswith(REFERENCE_OPEN) and stripped.endswith("}")):
        problems.append((path, "a vault reference must be the whole value"))
        return text
    body = stripped[len(REFERENCE_OPEN) : -1]
    if "?" in body or "#" in body:
        problems.append((path, "vault reference options and versions are not supported yet"))
        return text
    name, _, rest = body.partition("/")
    resource, _, key = rest.strip("/").partition("/")
    vault = vaults.get(name)
    if vault is None:
        known = ", ".join(sorted(vaults))
        problems.append((path, f'unknown vault "{name}" in a vault reference (known: {known})'))
        return text
    if not resource:
        problems.append((path, "a vault reference needs a secret name after the vault"))
        return text
    variable = variable_name(vault, resource)
    secret = env.get(variable)
    if secret is None:
        problems.append((path, f'environment variable "{variable}" is not set'))
        return text
    if vault.base64_decode:
        try:
            secret = base64.b64decode(secret, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            problems.append((path, f'environment variable "{variable}" is not base64 text'))
            return text
    if not key:
        return secret
    return _json_key(secret, key, variable, path, problems, text)


def _json_key(
    secret: str,
    key: str,
    variable: str,
    path: str,
    problems: list[tuple[str, str]],
    text: str,
) -> str:
    try:
        document = json.loads(secret)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        problems.append((path, f'environment variable "{variable}" does not hold a JSON object'))
        return text
    found = document.get(key)
    if found is None:
        problems.append((path, f'environment variable "{variable}" has no key "{key}"'))
        return text
    if not isinstance(found, str):
        # a reference stands for a string value, as in Kong
        problems.append((path, f'key "{key}" of environment variable "{variable}" is not a string'))
        return text
    return found
