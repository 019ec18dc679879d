"""Kong's openid-connect keys this plugin does not act on, each with what happens to it.

Data only: the union of Kong's published schemas 3.4 to 3.15. schema.py reads the keys it
supports; every other Kong key is here, so none is ever reported as an unknown field.

- IGNORED: keys that only matter to flows this gateway does not run (authorization code,
  sessions, logout, password and refresh grants, userinfo...). Those flows cannot be enabled
  (auth_methods says they are not supported), so any value is accepted and has no effect.
- DEFAULT_ONLY: keys that would change how a supported flow behaves. Kong's default (which decK
  writes into every dump) or null is accepted; any other value is "not supported yet".
"""

from __future__ import annotations

from typing import Any

# why an ignored key has no effect: the flow it belongs to
CODE_FLOW = "the authorization code flow (not supported)"
SESSIONS = "session cookies (not supported)"
LOGOUT = "logout, part of the session flows (not supported)"
PASSWORD_GRANT = "the password grant (not supported)"
REFRESH_GRANT = "the refresh token grant (not supported)"
CLIENT_ID_TOKENS = "id tokens sent by clients, read by the session and code flows (not supported)"
USERINFO = "the userinfo method and user info lookups (not supported)"
TOKEN_EXCHANGE = "token exchange (not supported yet)"
LOGIN_ACTIONS = "login_action response or redirect (not supported yet)"
HEADER_REPLAY = "token_headers_replay (not supported yet)"
CONSUMER_GROUPS = "consumer_groups_claim (not supported yet)"
PROOF_OF_POSSESSION = "proof of possession (not supported yet)"
TLS_CLIENT_AUTH = "tls_client_auth (not supported yet)"
SHARED_CACHE_ITEMS = (
    "fastgw's shared cache holds client credentials tokens (sealed) whenever "
    "cluster_cache_strategy is redis; introspection results stay in each process"
)

IGNORED: dict[str, str] = {
    "authorization_cookie_domain": CODE_FLOW,
    "authorization_cookie_http_only": CODE_FLOW,
    "authorization_cookie_name": CODE_FLOW,
    "authorization_cookie_path": CODE_FLOW,
    "authorization_cookie_same_site": CODE_FLOW,
    "authorization_cookie_secure": CODE_FLOW,
    "authorization_endpoint": CODE_FLOW,
    "authorization_query_args_client": CODE_FLOW,
    "authorization_query_args_names": CODE_FLOW,
    "authorization_query_args_values": CODE_FLOW,
    "authorization_rolling_timeout": CODE_FLOW,
    "cache_token_exchange": TOKEN_EXCHANGE,
    "cache_user_info": USERINFO,
    "cluster_cache_items": SHARED_CACHE_ITEMS,
    "consumer_groups_optional": CONSUMER_GROUPS,
    "disable_session": SESSIONS,
    "domains": CODE_FLOW,
    "downstream_session_id_header": SESSIONS,
    "dpop_proof_lifetime": PROOF_OF_POSSESSION,
    "dpop_use_nonce": PROOF_OF_POSSESSION,
    "end_session_endpoint": LOGOUT,
    "forbidden_destroy_session": SESSIONS,
    "id_token_param_name": CLIENT_ID_TOKENS,
    "id_token_param_type": CLIENT_ID_TOKENS,
    "jwt_session_claim": SESSIONS,
    "jwt_session_cookie": SESSIONS,
    "login_methods": LOGIN_ACTIONS,
    "login_redirect_mode": LOGIN_ACTIONS,
    "login_redirect_uri": LOGIN_ACTIONS,
    "login_tokens": LOGIN_ACTIONS,
    "logout_methods": LOGOUT,
    "logout_post_arg": LOGOUT,
    "logout_query_arg": LOGOUT,
    "logout_redirect_uri": LOGOUT,
    "logout_revoke": LOGOUT,
    "logout_revoke_access_token": LOGOUT,
    "logout_revoke_refresh_token": LOGOUT,
    "logout_uri_suffix": LOGOUT,
    "max_age": CODE_FLOW,
    "mtls_revocation_endpoint": LOGOUT,
    "password_param_type": PASSWORD_GRANT,
    "preserve_query_args": CODE_FLOW,
    "proof_of_possession_auth_methods_validation": PROOF_OF_POSSESSION,
    "pushed_authorization_request_endpoint": CODE_FLOW,
    "pushed_authorization_request_endpoint_auth_method": CODE_FLOW,
    "redirect_uri": CODE_FLOW,
    "redis": SESSIONS,
    "refresh_token_param_name": REFRESH_GRANT,
    "refresh_token_param_type": REFRESH_GRANT,
    "refresh_tokens": REFRESH_GRANT,
    "require_proof_key_for_code_exchange": CODE_FLOW,
    "require_pushed_authorization_requests": CODE_FLOW,
    "require_signed_request_object": CODE_FLOW,
    "response_mode": CODE_FLOW,
    "response_type": CODE_FLOW,
    "reverify": SESSIONS,
    "revocation_endpoint": LOGOUT,
    "revocation_endpoint_auth_method": LOGOUT,
    "revocation_token_param_name": LOGOUT,
    "session_absolute_timeout": SESSIONS,
    "session_audience": SESSIONS,
    "session_bind": SESSIONS,
    "session_cookie_domain": SESSIONS,
    "session_cookie_http_only": SESSIONS,
    "session_cookie_name": SESSIONS,
    "session_cookie_path": SESSIONS,
    "session_cookie_same_site": SESSIONS,
    "session_cookie_secure": SESSIONS,
    "session_enforce_same_subject": SESSIONS,
    "session_hash_storage_key": SESSIONS,
    "session_hash_subject": SESSIONS,
    "session_idling_timeout": SESSIONS,
    "session_memcached_host": SESSIONS,
    "session_memcached_port": SESSIONS,
    "session_memcached_prefix": SESSIONS,
    "session_memcached_socket": SESSIONS,
    "session_memcached_ssl": SESSIONS,
    "session_memcached_ssl_verify": SESSIONS,
    "session_redis_cluster_max_redirections": SESSIONS,
    "session_redis_cluster_nodes": SESSIONS,
    "session_redis_connect_timeout": SESSIONS,
    "session_redis_host": SESSIONS,
    "session_redis_password": SESSIONS,
    "session_redis_port": SESSIONS,
    "session_redis_prefix": SESSIONS,
    "session_redis_read_timeout": SESSIONS,
    "session_redis_send_timeout": SESSIONS,
    "session_redis_server_name": SESSIONS,
    "session_redis_socket": SESSIONS,
    "session_redis_ssl": SESSIONS,
    "session_redis_ssl_verify": SESSIONS,
    "session_redis_username": SESSIONS,
    "session_remember": SESSIONS,
    "session_remember_absolute_timeout": SESSIONS,
    "session_remember_cookie_name": SESSIONS,
    "session_remember_rolling_timeout": SESSIONS,
    "session_request_headers": SESSIONS,
    "session_response_headers": SESSIONS,
    "session_rolling_timeout": SESSIONS,
    "session_secret": SESSIONS,
    "session_storage": SESSIONS,
    "session_store_metadata": SESSIONS,
    "tls_client_auth_ssl_verify": TLS_CLIENT_AUTH,
    "token_headers_grants": HEADER_REPLAY,
    "token_headers_prefix": HEADER_REPLAY,
    "unauthorized_destroy_session": SESSIONS,
    "upstream_session_id_header": SESSIONS,
    "userinfo_accept": USERINFO,
    "userinfo_endpoint": USERINFO,
    "userinfo_headers_client": USERINFO,
    "userinfo_headers_names": USERINFO,
    "userinfo_headers_values": USERINFO,
    "userinfo_query_args_client": USERINFO,
    "userinfo_query_args_names": USERINFO,
    "userinfo_query_args_values": USERINFO,
    "verify_nonce": CODE_FLOW,
    "verify_parameters": CODE_FLOW,
}

# Kong's default of each key (None: null, no default); a record's default is its fields'
DEFAULT_ONLY: dict[str, Any] = {
    "client_arg": "client_id",
    "consumer_groups_claim": None,
    "downstream_access_token_header": None,
    "downstream_access_token_jwk_header": None,
    "downstream_headers": None,
    "downstream_headers_claims": None,
    "downstream_headers_names": None,
    "downstream_id_token_header": None,
    "downstream_id_token_jwk_header": None,
    "downstream_introspection_header": None,
    "downstream_introspection_jwt_header": None,
    "downstream_refresh_token_header": None,
    "downstream_user_info_header": None,
    "downstream_user_info_jwt_header": None,
    "forbidden_redirect_uri": None,
    "http_proxy": None,
    "http_proxy_authorization": None,
    "http_version": 1.1,
    "https_proxy": None,
    "https_proxy_authorization": None,
    "ignore_signature": [],
    "introspection_accept": "application/json",
    "introspection_headers_client": None,
    "introspection_post_args_client": None,
    "introspection_post_args_client_headers": None,
    "login_action": "upstream",
    "mtls_introspection_endpoint": None,
    "mtls_token_endpoint": None,
    "no_proxy": None,
    "principals": {
        "directory": "default",
        "enabled": False,
        "error_on_miss": True,
        "match_consumer": True,
        "match_consumer_groups": True,
        "principal_by": None,
        "principal_claim": None,
    },
    "proof_of_possession_dpop": "off",
    "proof_of_possession_mtls": "off",
    "proof_of_possession_mtls_from_header": {
        "allow_partial_chain": False,
        "ca_certificates": None,
        "cert_cache_ttl": 60000,
        "certificate_header_format": "url_encoded",
        "certificate_header_name": None,
        "http_proxy_host": None,
        "http_proxy_port": None,
        "http_timeout": 30000,
        "https_proxy_host": None,
        "https_proxy_port": None,
        "revocation_check_mode": "IGNORE_CA_ERROR",
        "secure_source": True,
        "ssl_verify": True,
    },
    "resolve_distributed_claims": False,
    "search_user_info": False,
    "tls_client_auth_cert_id": None,
    "token_exchange": {
        "cache": {"enabled": True, "ttl": None},
        "request": {
            "audience": None,
            "empty_audience": False,
            "empty_scopes": False,
            "scopes": None,
        },
        "subject_token_issuers": None,
    },
    "token_exchange_endpoint": None,
    "token_headers_client": None,
    "token_headers_replay": None,
    "token_post_args_client": None,
    "unauthorized_redirect_uri": None,
    "unexpected_redirect_uri": None,
    "upstream_access_token_jwk_header": None,
    "upstream_id_token_header": None,
    "upstream_id_token_jwk_header": None,
    "upstream_introspection_header": None,
    "upstream_introspection_jwt_header": None,
    "upstream_refresh_token_header": None,
    "upstream_user_info_header": None,
    "upstream_user_info_jwt_header": None,
    "using_pseudo_issuer": False,
}


def is_default(value: Any, default: Any) -> bool:
    """True when `value` is what Kong writes for a key left at `default`: null, an empty array
    or record when there is no default, the default itself (arrays in any order), or a record
    whose every field is at its own default."""
    if value is None:
        return True
    if isinstance(default, dict):
        return isinstance(value, dict) and all(
            key in default and is_default(item, default[key]) for key, item in value.items()
        )
    if default is None:
        return value in ([], {})
    if isinstance(default, list) and isinstance(value, list):
        return sorted(map(str, value)) == sorted(map(str, default))
    if isinstance(default, bool) or isinstance(value, bool):
        return value is default
    return bool(value == default)


# `cluster_cache_redis.cloud_authentication` as decK writes it when unused
CLOUD_AUTHENTICATION_DEFAULT: dict[str, Any] = {
    "auth_provider": None,
    "aws_access_key_id": None,
    "aws_assume_role_arn": None,
    "aws_cache_name": None,
    "aws_is_serverless": True,
    "aws_region": None,
    "aws_role_session_name": None,
    "aws_secret_access_key": None,
    "azure_client_id": None,
    "azure_client_secret": None,
    "azure_tenant_id": None,
    "gcp_service_account_json": None,
}
