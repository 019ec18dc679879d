"""The `ip-restriction` config: Kong's keys, types and checks
(kong/plugins/ip-restriction/schema.lua), declared once and read into `IpRestrictionConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastgw.config.schema import Checked, Number, Reader, Schema, Strings, Text, join
from fastgw.plugins.common.networks import valid_network

DEFAULT_STATUS = 403  # Kong's handler, when `status` is not set


@dataclass(frozen=True, slots=True)
class IpRestrictionConfig:
    allow: tuple[str, ...]
    deny: tuple[str, ...]
    status: int | None
    message: str | None


def _valid_networks(key: str) -> Any:
    def check(reader: Reader, values: dict[str, Any]) -> None:
        kept = []
        for index, entry in enumerate(values[key]):
            if valid_network(entry):
                kept.append(entry)
            else:  # Kong's typedefs.ip_or_cidr wording
                where = join(reader.key_path(key), index)
                reader.problems.append((where, f"invalid ip or cidr range: '{entry}'"))
        values[key] = tuple(kept)

    return check


def _at_least_one(reader: Reader, values: dict[str, Any]) -> None:
    # (a list given with bad entries only is reported as such, as Kong does)
    if not reader.raw.get("allow") and not reader.raw.get("deny"):
        reader.error(
            "", "at least one of these fields must be non-empty: 'config.allow', 'config.deny'"
        )


def _status(reader: Reader, values: dict[str, Any]) -> None:
    status = values["status"]
    if status is None:
        return
    if status != int(status) or not 400 <= status <= 599:
        # Kong loads it, then answers 500 at the first rejection (kong.response.error's range)
        reader.error("status", "must be an HTTP error status, between 400 and 599")
        values["status"] = None
    else:
        values["status"] = int(status)


def _config(reader: Reader, values: dict[str, Any]) -> IpRestrictionConfig:
    return IpRestrictionConfig(**values)


IP_RESTRICTION: Schema[IpRestrictionConfig] = Schema(
    {
        "allow": Checked(Strings(), _valid_networks("allow")),
        "deny": Checked(Strings(), _valid_networks("deny")),
        "status": Checked(Number(), _status),
        "message": Text(allow_empty=True),
    },
    build=_config,
    checks=(_at_least_one,),
)
