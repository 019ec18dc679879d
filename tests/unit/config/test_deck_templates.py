"""decK's `${{ env "DECK_..." }}` templates, rendered on the raw text before parsing as decK
renders them, beside fastgw's `${VAR}` (values only, after parsing)."""

from __future__ import annotations

import textwrap

import pytest

from fastgw.config import GatewayConfig, parse_config
from fastgw.errors import ConfigError

HEADER = '_format_version: "3.0"\n'

# The shape of Kong's client-credentials how-to: decK output with every value double-quoted,
# the template's own quotes inside (invalid YAML until rendered).
HOW_TO = """\
_format_version: "3.0"
services:
  - name: example-service
    url: "${{ env "DECK_UPSTREAM" }}"
    routes:
      - name: example-route
        paths:
          - "/anything"
plugins:
  - name: openid-connect
    service: example-service
    config:
      issuer: "${{ env "DECK_ISSUER" }}"
      client_id:
      - "${{ env "DECK_CLIENT_ID" }}"
      client_secret:
      - "${{ env "DECK_CLIENT_SECRET" }}"
      client_auth:
      - client_secret_post
      auth_methods:
      - client_credentials
      client_credentials_param_type:
      - header
      cache_tokens_salt: "${{ env "DECK_TOKEN_SALT" }}"
"""
HOW_TO_ENV = {
    "DECK_UPSTREAM": "http://127.0.0.1:9000",
    "DECK_ISSUER": "https://idp.example/realms/main",
    "DECK_CLIENT_ID": "gateway",
    "DECK_CLIENT_SECRET": "s3cret",
    "DECK_TOKEN_SALT": "salt-salt-salt",
}


def parse(body: str, env: dict[str, str]) -> GatewayConfig:
    return parse_config(HEADER + textwrap.dedent(body), env=env)


def problems(body: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse(body, env or {})
    return caught.value.problems


def test_kongs_how_to_with_quoted_templates_loads() -> None:
    config = parse_config(HOW_TO, env=HOW_TO_ENV)
    [service] = config.services
    assert (service.host, service.port) == ("127.0.0.1", 9000)
    oidc = service.plugins[0].config
    assert oidc.issuer == "https://idp.example/realms/main"
    assert [(client.client_id, client.client_secret) for client in oidc.clients] == [
        ("gateway", "s3cret")
    ]
    assert oidc.cache_tokens_salt == "salt-salt-salt"


def test_a_missing_variable_names_the_key_and_the_variable() -> None:
    env = {key: value for key, value in HOW_TO_ENV.items() if key != "DECK_CLIENT_SECRET"}
    with pytest.raises(ConfigError) as caught:
        parse_config(HOW_TO, env=env)
    assert caught.value.problems == [
        (
            "plugins[0].config.client_secret[0]",
            'environment variable "DECK_CLIENT_SECRET" is not set',
        )
    ]


def test_only_deck_variables_are_read_as_deck_allows() -> None:
    assert problems("services: [{host: '${{ env \"UPSTREAM\" }}'}]\n", {"UPSTREAM": "a"}) == [
        (
            "services[0].host",
            'a decK template reads only variables prefixed with DECK_, not "UPSTREAM" '
            "(fastgw's ${UPSTREAM} reads any)",
        )
    ]


def test_the_value_is_part_of_the_text_so_it_parses_as_yaml_does() -> None:
    config = parse(
        """
        _fastgw: {workers: ${{ env "DECK_WORKERS" | toInt }}}
        services:
        - host: a
          port: ${{ env "DECK_PORT" }}
          enabled: ${{ env "DECK_ON" | toBool }}
          routes: [{paths: [/]}]
        upstreams:
        - name: u
          healthchecks: {threshold: ${{ env "DECK_THRESHOLD" | toFloat }}}
        """,
        {"DECK_WORKERS": "+3", "DECK_PORT": "9000", "DECK_ON": "T", "DECK_THRESHOLD": "12.5"},
    )
    assert config.settings.workers == 3
    assert config.services[0].port == 9000  # an integer: fastgw's "${PORT}" stays a string
    assert config.upstreams[0].threshold == 12.5


def test_indent_keeps_a_multi_line_value_inside_its_block() -> None:
    config = parse(
        """
        services:
        - host: a
          plugins:
          - name: request-termination
            config:
              status_code: 200
              body: |
                ${{ env "DECK_BODY" | indent 8 }}
        """,
        {"DECK_BODY": "line one\nline two"},
    )
    assert config.services[0].plugins[0].config.body == "line one\nline two\n"


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ('${{ env "DECK_X" | toInt }}', 'environment variable "DECK_X" is not an integer (toInt)'),
        (
            '${{ env "DECK_X" | toBool }}',
            'environment variable "DECK_X" is not a boolean (toBool takes true, false, 1, 0)',
        ),
        (
            '${{ env "DECK_X" | toFloat }}',
            'environment variable "DECK_X" is not a number (toFloat)',
        ),
        (
            '${{ env "DECK_X" | lower }}',
            'unknown template function "lower" (decK has toBool, toInt, toFloat, indent)',
        ),
        ('${{ env "DECK_X" | indent }}', "indent takes the number of spaces, as in indent 8"),
        ('${{ lower "x" }}', 'expected ${{ env "NAME" }}'),
        ('${{ env "DECK_X"', 'unterminated "${{" (write "$${" for a literal "${")'),
    ],
)
def test_a_template_that_cannot_render_is_reported_at_its_key(template: str, reason: str) -> None:
    body = f"services: [{{host: a, name: '{template}'}}]\n"  # quoted as decK prints it
    assert problems(body, {"DECK_X": "x"}) == [("services[0].name", reason)]


def test_comment_lines_are_not_rendered_and_a_template_in_no_value_has_its_line() -> None:
    config = parse(
        """
        # services: [{host: '${{ env "DECK_UNSET" }}'}]
        services: [{host: a}]
        """,
        {},
    )
    assert config.services[0].host == "a"
    assert problems(
        """
        services:
        - host: a
          tags: [x]  # ${{ env "DECK_UNSET" }}
        """
    ) == [("(root)", 'line 5: environment variable "DECK_UNSET" is not set')]


def test_escapes_and_rendered_values_stay_as_written() -> None:
    config = parse(
        """
        services:
        - host: a
          name: "$${{ env \\"DECK_NAME\\" }}"
          tags: ['${{ env "DECK_TAG" }}', '${TAG}']
        """,
        {"DECK_TAG": "${HOME}", "TAG": "plain"},
    )
    [service] = config.services
    assert service.name == '${{ env "DECK_NAME" }}'  # "$${" stands for a literal "${"
    # a rendered value is text, never expanded again; fastgw's ${TAG} still substitutes
    assert (
        parse_config(
            HEADER + "services: [{host: a, name: '${{ env \"DECK_TAG\" }}'}]\n",
            env={"DECK_TAG": "${X}"},
        )
        .services[0]
        .name
        == "${X}"
    )


def test_json_documents_are_rendered_too() -> None:
    text = '{"_format_version": "3.0", "services": [{"host": "${{ env "DECK_HOST" }}"}]}'
    assert parse_config(text, env={"DECK_HOST": "backend"}).services[0].host == "backend"
