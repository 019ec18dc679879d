"""Secrets kept out of the config file: Kong's `{vault://...}` references, resolved once, when
the config loads, by the substitution walk (fastgw/config/substitution.py).

Only Kong's `env` vault exists here (the `vaults:` entity: fastgw/config/entities/vaults.py).

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

from fastgw.config.model import EnvVault
from fastgw.config.reader import Findings

REFERENCE_OPEN = "{vault://"
BUILT_IN_ENV_VAULT = "env"
ENV_VAULT = EnvVault(BUILT_IN_ENV_VAULT, "", False)  # references name it without a `vaults:` entry


def variable_name(vault: EnvVault, resource: str) -> str:
    """The environment variable a reference's resource names in `vault`."""
    return (vault.variable_prefix + resource).replace("-", "_").upper()


def resolve_reference(
    text: str,
    path: str,
    vaults: Mapping[str, EnvVault],
    env: Mapping[str, str],
    problems: Findings,
) -> str:
    """`text`, a whole reference, replaced by its secret; problems carry `path`."""
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
    problems: Findings,
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
