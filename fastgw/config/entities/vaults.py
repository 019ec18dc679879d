"""Kong's `vaults:` entity: another name (and a variable prefix) for the env vault, the one
vault fastgw has; the references themselves: fastgw/config/vaults.py.

Read before the rest of the document, whose references may name these vaults.
"""

from __future__ import annotations

from typing import Any

from fastgw.config.model import EnvVault
from fastgw.config.schema import (
    TAGS,
    Boolean,
    Findings,
    Ignored,
    Number,
    Reader,
    Record,
    Schema,
    Text,
    join,
    read_schema,
    values_of,
)
from fastgw.config.vaults import BUILT_IN_ENV_VAULT, ENV_VAULT

# Kong's other vault backends: named, so that a config using one is told it is not supported
# rather than that the name is unknown
KONG_VAULT_BACKENDS = ("aws", "azure", "conjur", "gcp", "hcv", "konnect")

VAULT_CONFIG = Schema(
    {
        "prefix": Text("", allow_empty=True),
        "base64_decode": Boolean(False),
        # secret rotation: values are read once at load here, so there is nothing to refresh
        "ttl": Number(minimum=0),
        "neg_ttl": Number(minimum=0),
        "resurrect_ttl": Number(minimum=0),
    },
    build=values_of,
)


def _vault(reader: Reader, values: dict[str, Any]) -> EnvVault | None:
    backend, name = values["name"], values["prefix"]
    if backend is not None and backend != BUILT_IN_ENV_VAULT:
        if backend in KONG_VAULT_BACKENDS:
            reader.error("name", f'the "{backend}" vault is not supported yet (only env)')
        else:
            reader.error("name", f'unknown vault "{backend}" (only env)')
        return None
    if name is None or backend is None:
        return None
    config = values["config"]
    return EnvVault(name, config["prefix"], config["base64_decode"])


VAULT: Schema[EnvVault | None] = Schema(
    {
        "name": Text(required=True),  # the backend: env
        "prefix": Text(required=True),  # the name references use
        "description": Text(allow_empty=True),
        "tags": TAGS,
        "id": Ignored(),
        "created_at": Ignored(),
        "updated_at": Ignored(),
        "config": Record(VAULT_CONFIG),
    },
    build=_vault,
    annotations=True,
)


def read_vaults(raw: object, problems: Findings, warnings: Findings) -> dict[str, EnvVault]:
    """The vaults references may name: the built-in `env`, and every `vaults:` entry."""
    vaults = {BUILT_IN_ENV_VAULT: ENV_VAULT}
    document = Reader({"vaults": raw}, "", problems, warnings)
    for index, item in enumerate(document.sequence("vaults")):
        entry = document.child(item, join("vaults", index))
        vault = read_schema(entry, VAULT)
        if vault is None:
            continue
        if vault.name in vaults:
            entry.error("prefix", f'"{vault.name}" is already the name of a vault')
            continue
        vaults[vault.name] = vault
    return vaults
