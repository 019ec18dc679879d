"""Kong's `certificates:` entity with its `snis:` nested (as decK writes them, records or plain
names): the certificate an HTTPS listener presents for those server names.

Each pair is checked when the config loads, so `fastgw check` names a bad one at its key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastgw.config.entities.routes import host_patterns
from fastgw.config.model import Certificate, CertificatePair
from fastgw.config.pem import PemError, check_pair
from fastgw.config.schema import (
    TAGS,
    Declared,
    Ignored,
    Reader,
    Schema,
    Text,
    join,
    read_schema,
)


def _name(reader: Reader, values: dict[str, Any]) -> str | None:
    name: str | None = values["name"]
    return name


SNI: Schema[str | None] = Schema(
    {
        "name": Text(required=True),
        "tags": TAGS,
        "id": Ignored(),
        "certificate": Ignored(),  # the certificate it is nested in
    },
    build=_name,
    annotations=True,
)


class Snis(Declared):
    """A certificate's `snis`: SNI records or plain names, checked as route hosts are (the same
    patterns)."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> tuple[str, ...]:
        names: list[object] = []
        for index, item in enumerate(reader.sequence(key)):
            if isinstance(item, Mapping):
                name = read_schema(reader.child(item, join(key, index)), SNI)
                if name is not None:
                    names.append(name)
            elif item is not None:  # a null among the names is skipped
                names.append(item)
        return host_patterns(reader, key, names)


def pair_checks(reader: Reader, key: str, pair: CertificatePair) -> bool:
    """Whether each certificate of `pair` belongs to its key; the problem is at `key` (or the
    `_alt` key of a certificate entity)."""
    for cert, private, where in (
        (pair.cert, pair.key, key),
        (pair.cert_alt, pair.key_alt, f"{key}_alt" if key == "cert" else key),
    ):
        if cert is None or private is None:
            continue
        try:
            check_pair(cert, private)
        except PemError as error:
            reader.error(where, str(error))
            return False
    return True


def _alt_together(reader: Reader, values: dict[str, Any]) -> None:
    if (values["cert_alt"] is None) != (values["key_alt"] is None):
        missing = "key_alt" if values["key_alt"] is None else "cert_alt"
        reader.error(missing, "cert_alt and key_alt go together")


def _certificate(reader: Reader, values: dict[str, Any]) -> Certificate | None:
    if values["cert"] is None or values["key"] is None:
        return None
    pair = CertificatePair(values["cert"], values["key"], values["cert_alt"], values["key_alt"])
    if not pair_checks(reader, "cert", pair):
        return None
    return Certificate(pair, values["snis"], reader.path)


CERTIFICATE: Schema[Certificate | None] = Schema(
    {
        "cert": Text(required=True),
        "key": Text(required=True),
        "cert_alt": Text(),
        "key_alt": Text(),
        "tags": TAGS,
        "id": Ignored(),
        "snis": Snis(),
    },
    build=_certificate,
    checks=(_alt_together,),
    annotations=True,
)


def add_certificate(
    certificate: Certificate, first_at: dict[str, str], problems: list[tuple[str, str]]
) -> None:
    """Record the SNIs of one more certificate: a name belongs to one certificate."""
    for index, name in enumerate(certificate.snis):
        first = first_at.setdefault(name, certificate.path)
        if first != certificate.path:
            problems.append(
                (
                    join(join(certificate.path, "snis"), index),
                    f'"{name}" is already used by {first}',
                )
            )
