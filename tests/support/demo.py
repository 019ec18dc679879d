"""`make run`: the gateway on a working default, with the bundled test IdP and an echo upstream.

Starts oidc-provider (tests/idp), the echo upstream and fastgw with three routes: `/` open,
`/secure` behind `openid-connect` (client credentials grant) and `/tokens` taking the caller's
own tokens (`bearer` for JWTs, `introspection` for opaque ones). Prints the curls to try.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading

import uvloop

from fastgw.config import parse_config
from fastgw.gateway import Gateway
from tests.support.echo import make_server
from tests.support.idp import BASIC_CLIENT, OPAQUE_RESOURCE, TestIdP

CONFIG = """
_format_version: "3.0"
_fastgw:
  listen: "{listen}"
  admin_listen: "{admin}"
services:
  - name: echo
    url: http://127.0.0.1:{echo_port}
    routes:
      - name: open
        paths: ["/"]
      - name: secure
        paths: ["/secure"]
        strip_path: false
        plugins:
          - name: openid-connect
            config:
              issuer: {issuer}
              client_auth: [client_secret_basic]
              auth_methods: [client_credentials]
              client_credentials_param_type: [header, body, query]
              scopes: [read]
              display_errors: true
      - name: tokens
        paths: ["/tokens"]
        strip_path: false
        plugins:
          - name: openid-connect
            config:
              issuer: {issuer}
              auth_methods: [bearer, introspection]
              client_id: [{client_id}]          # the gateway's own client: it introspects
              client_secret: [{client_secret}]
              display_errors: true
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default=os.environ.get("FASTGW_LISTEN", "127.0.0.1:8000"))
    parser.add_argument("--admin", default=os.environ.get("FASTGW_ADMIN", "127.0.0.1:8001"))
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    echo = make_server(0)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    idp = TestIdP(alg="RS256")
    idp.start()
    text = CONFIG.format(
        listen=args.listen,
        admin=args.admin,
        echo_port=echo.server_address[1],
        issuer=idp.issuer,
        client_id=BASIC_CLIENT[0],
        client_secret=BASIC_CLIENT[1],
    )
    config = parse_config(text, source="demo")
    client_id, secret = BASIC_CLIENT
    token_call = f"curl -s -u {client_id}:{secret} -d grant_type=client_credentials"
    access_token = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])'"

    async def serve() -> None:
        gateway = Gateway(config)
        try:
            await gateway.start()
        except OSError as error:
            raise SystemExit(
                f"cannot listen on {args.listen} or {args.admin}: {error.strerror}; "
                "set FASTGW_LISTEN / FASTGW_ADMIN (e.g. FASTGW_LISTEN=127.0.0.1:8080 make run)"
            ) from None
        host, port = gateway.addresses[0]
        base = f"http://{host}:{port}"
        print(
            f"""
fastgw demo is up.  IdP: {idp.issuer}   upstream: echo on port {echo.server_address[1]}

  curl -i {base}/hello                                       # open route, proxied as is
  curl -i -u {client_id}:{secret} {base}/secure/hello          # client credentials -> Bearer
  curl -i -u {client_id}:wrong-secret {base}/secure/hello      # 401
  curl -i {base}/secure/hello                                # 401, no credentials

  TOKEN=$({token_call} {idp.issuer}/token | {access_token})
  curl -i -H "Authorization: Bearer $TOKEN" {base}/tokens/hello    # your own JWT, verified
  OPAQUE=$({token_call} -d resource={OPAQUE_RESOURCE} {idp.issuer}/token | {access_token})
  curl -i -H "Authorization: Bearer $OPAQUE" {base}/tokens/hello   # opaque: introspected
  curl -i -H "Authorization: Bearer $TOKEN.x" {base}/tokens/hello  # 401, tampered

  curl -s http://{args.admin}/status                           # admin status

Ctrl-C stops it.""",
            flush=True,
        )
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):  # both stop the IdP and upstream too
            loop.add_signal_handler(signum, stopped.set)
        try:
            await stopped.wait()
        finally:
            await gateway.stop(drain_timeout=1)

    try:
        uvloop.run(serve())
    except KeyboardInterrupt:
        pass
    finally:
        idp.stop()
        echo.shutdown()


if __name__ == "__main__":
    main()
