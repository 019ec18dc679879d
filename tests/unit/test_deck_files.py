"""Files as decK writes them: `_info` (with defaults), `_konnect`, `_workspace`, tags on every
entity, vaults with `{vault://...}` references, `ca_certificates` referenced by services."""

from __future__ import annotations

import base64
import json
import textwrap

import pytest

from fastgw.config import GatewayConfig, parse_config
from fastgw.errors import ConfigError
from tests.support.certs import TestCa

HEADER = '_format_version: "3.0"\n'


def parse(body: str, env: dict[str, str] | None = None) -> GatewayConfig:
    return parse_config(HEADER + textwrap.dedent(body), env=env or {})


def problems(body: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse(body, env)
    return caught.value.problems


# -- metadata -------------------------------------------------------------------------------------


def test_info_konnect_and_workspace_are_accepted() -> None:
    config = parse(
        """
        _workspace: default
        _konnect: {control_plane_name: staging}
        _info:
          select_tags: [team-a, billing]
          default_lookup_tags: {consumer_groups: [billing-groups]}
        services:
        - {name: s, host: a, tags: [team-a], routes: [{paths: [/], tags: [team-a]}]}
        """
    )
    assert config.services[0].routes[0].paths == ("/",)


def test_metadata_is_still_checked() -> None:
    assert problems(
        """
        _workspace: 3
        _konnect: {control_plane: x}
        _info: {select_tags: team-a, colour: red}
        """
    ) == [
        ("_workspace", "must be a string"),
        ("_konnect.control_plane", "unknown field"),
        ("_info.select_tags", "must be an array of strings"),
        ("_info.colour", "unknown field"),
    ]


def test_info_defaults_fill_what_services_and_routes_leave_unset() -> None:
    config = parse(
        """
        _info:
          defaults:
            service: {port: 8080, protocol: https, retries: 10, read_timeout: 5000}
            route: {strip_path: false, path_handling: v1, preserve_host: true}
        services:
        - name: from-defaults
          host: a
          routes: [{name: r1, paths: [/a]}, {name: r2, paths: [/b], strip_path: true}]
        - {name: own-url, url: "http://b:81/x", retries: 2}
        routes:
        - {name: top, service: own-url, paths: [/c]}
        """
    )
    first, second = config.services
    assert (first.protocol, first.port, first.retries, first.read_timeout) == (
        "https",
        8080,
        10,
        5000,
    )
    assert [(r.strip_path, r.path_handling, r.preserve_host) for r in first.routes] == [
        (False, "v1", True),
        (True, "v1", True),
    ]
    # a service's url wins over protocol/port defaults; its own retries over the default
    assert (second.protocol, second.port, second.path, second.retries) == ("http", 81, "/x", 2)
    assert second.routes[0].strip_path is False


def test_info_defaults_problems() -> None:
    assert problems(
        """
        _info:
          defaults:
            service: {name: x, port: 0}
            upstream: {slots: 100}
        services: [{host: a}]
        """
    ) == [
        ("_info.defaults.service.name", "cannot be given a default"),
        ("_info.defaults.upstream", "not supported yet (set it on each upstream or target)"),
        ("services[0].port", "must be >= 1"),
    ]


# -- vaults ---------------------------------------------------------------------------------------

REQUEST_TERMINATION = """
services:
- host: a
  routes: [{paths: [/]}]
  plugins:
  - name: request-termination
    config: {status_code: 403, message: "%s"}
"""


def message_of(config: GatewayConfig) -> str:
    return str(config.services[0].plugins[0].config.message)


def test_env_vault_reference_without_a_vaults_entry() -> None:
    config = parse(REQUEST_TERMINATION % "{vault://env/my-secret-value}", {"MY_SECRET_VALUE": "s"})
    assert message_of(config) == "s"


def test_vault_entity_with_a_prefix_and_a_json_key() -> None:
    env = {
        "MY_SECRET_IDP": json.dumps({"client_secret": "from-json"}),
        "B64_TEXT": base64.b64encode(b"decoded").decode(),
    }
    body = textwrap.dedent(
        """
        vaults:
        - name: env
          prefix: my-env-vault
          description: secrets
          tags: [x]
          config: {prefix: MY_SECRET_}
        - {name: env, prefix: b64, config: {base64_decode: true, prefix: B64_, ttl: 60}}
        """
    )
    config = parse(body + REQUEST_TERMINATION % "{vault://my-env-vault/idp/client_secret}", env)
    assert message_of(config) == "from-json"
    config = parse(body + REQUEST_TERMINATION % "{vault://b64/text}", env)
    assert message_of(config) == "decoded"


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("{vault://env/missing}", 'environment variable "MISSING" is not set'),
        ("{vault://nope/x}", 'unknown vault "nope" in a vault reference (known: env)'),
        ("Bearer {vault://env/x}", "a vault reference must be the whole value"),
        ("{vault://env/x#2}", "vault reference options and versions are not supported yet"),
        ("{vault://env/}", "a vault reference needs a secret name after the vault"),
        ("{vault://env/plain/key}", 'environment variable "PLAIN" does not hold a JSON object'),
    ],
)
def test_vault_reference_problems_name_the_key(reference: str, reason: str) -> None:
    assert problems(REQUEST_TERMINATION % reference, {"PLAIN": "text"}) == [
        ("services[0].plugins[0].config.message", reason)
    ]


def test_vault_entity_problems() -> None:
    assert problems(
        """
        vaults:
        - {name: aws, prefix: aws-vault}
        - {name: env}
        - {name: env, prefix: env}
        - {name: env, prefix: e2, config: {region: x}}
        """
    ) == [
        ("vaults[0].name", 'the "aws" vault is not supported yet (only env)'),
        ("vaults[1].prefix", "is required"),
        ("vaults[2].prefix", '"env" is already the name of a vault'),
        ("vaults[3].config.region", "unknown field"),
    ]


def test_env_substitution_runs_before_vault_references() -> None:
    config = parse(REQUEST_TERMINATION % "{vault://env/${NAME}}", {"NAME": "x", "X": "resolved"})
    assert message_of(config) == "resolved"


# -- ca_certificates ------------------------------------------------------------------------------


def test_ca_certificates_are_checked_and_referenced_by_services() -> None:
    ca = TestCa()
    document = {
        "_format_version": "3.0",
        "ca_certificates": [
            {"id": "2c5d8c8e-6a3b-4f0e-9b1d-7a9c1e2f3a4b", "cert": ca.pem, "tags": ["idp"]}
        ],
        "services": [
            {
                "host": "a",
                "protocol": "https",
                "tls_verify": True,
                "ca_certificates": ["2c5d8c8e-6a3b-4f0e-9b1d-7a9c1e2f3a4b"],
            }
        ],
    }
    config = parse_config(json.dumps(document), env={})
    assert config.ca_certificates[0].pem == ca.pem
    assert config.services[0].ca_certificates == config.ca_certificates


def test_ca_certificate_problems() -> None:
    ca = TestCa()
    leaf, _ = ca.server_certificate("idp.internal")
    document = {
        "_format_version": "3.0",
        "ca_certificates": [
            {"cert": leaf},
            {"cert": "not a pem"},
            {"cert": ca.pem, "cert_digest": "00" * 32},
        ],
        "services": [{"host": "a", "ca_certificates": ["nope"], "client_certificate": {"id": "x"}}],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(document), env={})
    assert caught.value.problems == [
        (
            "ca_certificates[0].cert",
            "is not a CA certificate (its basic constraints lack CA:TRUE)",
        ),
        ("ca_certificates[1].cert", "must hold exactly one PEM certificate"),
        ("ca_certificates[2].cert_digest", "does not match cert (SHA-256 of its DER form)"),
        ("services[0].client_certificate", "not supported yet (no client certificates)"),
        (
            "services[0].ca_certificates[0]",
            "unknown CA certificate 'nope' (give it as an id of one)",
        ),
    ]
