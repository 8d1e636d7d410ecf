#!/usr/bin/env python3
"""A local HTTPS fake of Azure Key Vault secrets and of the Entra ID token endpoint.

No Key Vault emulator exists, so tests start this fake instead. It implements the
parts of the service that a secret reader uses, with the service's status codes,
headers and JSON shapes:

- Every vault request without a valid bearer token gets 401 with the challenge
  `WWW-Authenticate: Bearer authorization="https://HOST/TENANT",
  resource="https://vault.azure.net"`, the way Key Vault starts its
  challenge-based authentication.
- `POST /TENANT/oauth2/v2.0/token` runs the client-credentials grant: it checks
  `client_id` and `client_secret` and returns a bearer token. The vault accepts
  only tokens that this fake issued for the `https://vault.azure.net` resource.
- `GET /TENANT/v2.0/.well-known/openid-configuration` serves the OpenID metadata
  that MSAL (used by the Python azure-identity package) reads before a token request.
- `GET /secrets/NAME[/VERSION]?api-version=...` returns a secret: the latest
  version without VERSION. Names are case-insensitive, as in the service.
  Missing secrets and versions return 404 `SecretNotFound`, a disabled version
  returns 403 `Forbidden` with inner code `SecretDisabled`, and a client not in
  `readers` gets 403 `Forbidden` with inner code `ForbiddenByRbac`.

Test controls (no token needed):

- `POST /_fake/throttle?count=N`: the next N authorized secret requests get
  429 with `Retry-After: 1`.
- `POST /_fake/fail?count=N&status=S`: the next N authorized secret requests
  get server error S (500 to 599).
- `GET /_fake/requests`: the log of requests so far, as a JSON list. Entries
  carry the method, path, status and the secret name, version or client id;
  they never carry a client secret, a token or a secret value.

The secrets file is JSON:

    {
      "tenant": "test-tenant",
      "clients": {"runner-client": "runner-client-secret"},
      "readers": ["runner-client"],
      "throttle": 0,
      "secrets": {
        "db-password": [
          {"version": "0a1b...", "value": "old", "enabled": false},
          {"version": "2c3d...", "value": "new"}
        ]
      }
    }

The last version in each list is the latest. `readers` is optional; without it
every known client may read. `throttle` sets the initial throttle count.

Run: python3 azure_keyvault.py --port 0 --cert CERT --key KEY --secrets FILE.json
The first line on stdout is `listening on 127.0.0.1:PORT`.
"""

import argparse
import json
import re
import secrets
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

VAULT_RESOURCE = "https://vault.azure.net"
NAME_PATTERN = re.compile(r"^[0-9A-Za-z-]{1,127}$")
TOKEN_LIFETIME_SECONDS = 3600
MAX_BODY_BYTES = 64 * 1024


class VaultState:
    """Secrets, clients, issued tokens, pending faults and the request log."""

    def __init__(self, config):
        self.lock = threading.Lock()
        self.tenant = config.get("tenant", "test-tenant")
        self.clients = dict(config.get("clients", {}))
        readers = config.get("readers")
        self.readers = set(readers) if readers is not None else None
        self.throttle = int(config.get("throttle", 0))
        self.failures = []
        self.tokens = {}
        self.log = []
        self.secrets = {}
        now = int(time.time())
        for name, versions in config.get("secrets", {}).items():
            if not NAME_PATTERN.match(name):
                raise ValueError(f"invalid secret name {name!r} in the secrets file")
            entries = []
            for entry in versions:
                entries.append(
                    {
                        "version": entry.get("version") or secrets.token_hex(16),
                        "value": entry["value"],
                        "enabled": entry.get("enabled", True),
                        "created": entry.get("created", now),
                        "contentType": entry.get("contentType"),
                    }
                )
            self.secrets[name.lower()] = (name, entries)

    def record(self, entry):
        with self.lock:
            self.log.append(entry)

    def issue_token(self, client_id, resource):
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = (client_id, resource, time.time() + TOKEN_LIFETIME_SECONDS)
        return token

    def token_client(self, token):
        """Return the client id a valid vault token was issued to, or None."""
        with self.lock:
            issued = self.tokens.get(token)
        if issued is None:
            return None
        client_id, resource, expires = issued
        if resource != VAULT_RESOURCE or expires < time.time():
            return None
        return client_id

    def take_fault(self):
        """Return the status of the next pending fault (429 or 5xx), or None."""
        with self.lock:
            if self.throttle > 0:
                self.throttle -= 1
                return 429
            if self.failures:
                return self.failures.pop(0)
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "azure-keyvault-fake"

    @property
    def state(self):
        return self.server.state

    def log_message(self, format, *args):
        # Keep stdout for the "listening on" line and stderr quiet.
        pass

    def base_url(self):
        host, port = self.server.server_address[:2]
        return f"https://{host}:{port}"

    def send_json(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", secrets.token_hex(16))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def send_vault_error(self, status, code, message, inner=None, headers=None):
        error = {"code": code, "message": message}
        if inner:
            error["innererror"] = {"code": inner}
        self.send_json(status, {"error": error}, headers)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            return None
        return self.rfile.read(length).decode("utf-8", errors="replace")

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/_fake/requests":
            with self.state.lock:
                log = list(self.state.log)
            self.send_json(200, log)
        elif url.path.endswith("/v2.0/.well-known/openid-configuration"):
            self.openid_configuration(url.path)
        else:
            self.vault_request(url)

    def do_POST(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/_fake/throttle":
            count = int(query.get("count", ["1"])[0])
            with self.state.lock:
                self.state.throttle = count
            self.send_json(200, {"throttle": count})
        elif url.path == "/_fake/fail":
            count = int(query.get("count", ["1"])[0])
            status = int(query.get("status", ["503"])[0])
            if not 500 <= status <= 599:
                self.send_json(400, {"error": "status must be from 500 to 599"})
                return
            with self.state.lock:
                self.state.failures.extend([status] * count)
            self.send_json(200, {"fail": count, "status": status})
        elif url.path == f"/{self.state.tenant}/oauth2/v2.0/token":
            self.token_request(url.path)
        elif url.path.endswith("/oauth2/v2.0/token"):
            tenant = url.path.split("/")[1]
            self.state.record({"method": "POST", "path": url.path, "status": 400})
            self.send_json(
                400,
                {
                    "error": "invalid_request",
                    "error_description": f"AADSTS90002: Tenant '{tenant}' not found.",
                    "error_codes": [90002],
                },
            )
        else:
            self.vault_request(url)

    def do_PUT(self):
        self.vault_request(urlsplit(self.path))

    def do_DELETE(self):
        self.vault_request(urlsplit(self.path))

    def openid_configuration(self, path):
        tenant = path.split("/")[1]
        base = self.base_url()
        status = 200 if tenant == self.state.tenant else 400
        self.state.record({"method": "GET", "path": path, "status": status})
        if status != 200:
            self.send_json(400, entra_error("invalid_tenant", 90002, f"Tenant '{tenant}' not found."))
            return
        self.send_json(
            200,
            {
                "issuer": f"{base}/{tenant}/v2.0",
                "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
                "response_types_supported": ["code", "token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "tenant_region_scope": None,
            },
        )

    def token_request(self, path):
        body = self.read_body()
        form = {key: values[0] for key, values in parse_qs(body or "").items()}
        client_id = form.get("client_id", "")
        entry = {"method": "POST", "path": path, "client_id": client_id}
        status, response = self.grant(form)
        entry["status"] = status
        self.state.record(entry)
        self.send_json(status, response)

    def grant(self, form):
        """Check a client-credentials grant; return (status, JSON body)."""
        client_id = form.get("client_id", "")
        scope = form.get("scope", "")
        if form.get("grant_type") != "client_credentials":
            return 400, entra_error("unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        if client_id not in self.state.clients:
            return 400, entra_error(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{self.state.tenant}'.",
            )
        if form.get("client_secret") != self.state.clients[client_id]:
            return 401, entra_error(
                "invalid_client",
                7000215,
                f"Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
            )
        if not scope.endswith("/.default"):
            return 400, entra_error("invalid_scope", 1002012, f"The provided value for scope {scope} is not valid.")
        resource = scope[: -len("/.default")]
        token = self.state.issue_token(client_id, resource)
        return 200, {
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECONDS,
            "ext_expires_in": TOKEN_LIFETIME_SECONDS,
            "access_token": token,
        }

    def vault_request(self, url):
        entry = {"method": self.command, "path": url.path}
        parts = url.path.strip("/").split("/")
        if len(parts) in (2, 3) and parts[0] == "secrets":
            entry["name"] = parts[1]
            entry["version"] = parts[2] if len(parts) == 3 and parts[2] else None
        status = self.vault_response(url, parts, entry)
        entry["status"] = status
        self.state.record(entry)

    def vault_response(self, url, parts, entry):
        """Send the response to one vault request and return its status."""
        client_id = self.authorized_client()
        if client_id is None:
            challenge = f'Bearer authorization="{self.base_url()}/{self.state.tenant}", resource="{VAULT_RESOURCE}"'
            self.send_vault_error(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
                headers={"WWW-Authenticate": challenge},
            )
            return 401
        entry["client_id"] = client_id
        if not parse_qs(url.query).get("api-version"):
            self.send_vault_error(400, "BadParameter", "The api-version query parameter is required.")
            return 400
        if self.command != "GET" or "name" not in entry:
            self.send_vault_error(404, "NotFound", f"The fake serves only GET /secrets/NAME[/VERSION], not {self.command} {url.path}.")
            return 404
        fault = self.state.take_fault()
        if fault is not None:
            self.send_fault(fault)
            return fault
        if self.state.readers is not None and client_id not in self.state.readers:
            self.send_vault_error(
                403,
                "Forbidden",
                f"Caller is not authorized to perform action on resource. Caller: appid={client_id}. Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'.",
                inner="ForbiddenByRbac",
            )
            return 403
        return self.get_secret(entry["name"], entry["version"])

    def authorized_client(self):
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        return self.state.token_client(token.strip())

    def send_fault(self, status):
        if status == 429:
            self.send_vault_error(
                429,
                "Throttled",
                "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
                headers={"Retry-After": "1"},
            )
        else:
            self.send_vault_error(status, "ServiceUnavailable", "The service is temporarily unavailable.")

    def get_secret(self, name, version):
        if not NAME_PATTERN.match(name):
            self.send_vault_error(400, "BadParameter", f"The request URI contains an invalid name: {name}")
            return 400
        stored = self.state.secrets.get(name.lower())
        versions = stored[1] if stored else []
        if version is None:
            found = versions[-1] if versions else None
        else:
            found = next((v for v in versions if v["version"] == version), None)
        if found is None:
            missing_id = name if version is None else f"{name}/{version}"
            self.send_vault_error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {missing_id} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command.",
            )
            return 404
        if not found["enabled"]:
            self.send_vault_error(
                403,
                "Forbidden",
                "Operation get is not allowed on a disabled secret.",
                inner="SecretDisabled",
            )
            return 403
        self.send_json(200, self.secret_bundle(stored[0], found))
        return 200

    def secret_bundle(self, name, version):
        bundle = {
            "value": version["value"],
            "id": f"{self.base_url()}/secrets/{name}/{version['version']}",
            "attributes": {
                "enabled": True,
                "created": version["created"],
                "updated": version["created"],
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": {},
        }
        if version["contentType"]:
            bundle["contentType"] = version["contentType"]
        return bundle


class FakeServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        print(f"request from {client_address[0]}:{client_address[1]} failed: {error!r}", file=sys.stderr, flush=True)


def entra_error(error, code, description):
    return {
        "error": error,
        "error_description": f"AADSTS{code}: {description}",
        "error_codes": [code],
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
    }


def watch_stdin(server):
    """Stop the server when stdin closes, so the fake ends with the test process."""
    sys.stdin.buffer.read()
    server.shutdown()


def main():
    parser = argparse.ArgumentParser(description="Local HTTPS fake of Azure Key Vault secrets.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free port")
    parser.add_argument("--cert", required=True, help="PEM certificate file for TLS")
    parser.add_argument("--key", required=True, help="PEM private key file for TLS")
    parser.add_argument("--secrets", required=True, help="JSON file with tenant, clients and secrets")
    parser.add_argument("--exit-with-stdin", action="store_true", help="exit when stdin reaches end of file")
    args = parser.parse_args()

    with open(args.secrets, encoding="utf-8") as file:
        state = VaultState(json.load(file))

    server = FakeServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.state = state
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    # The handshake runs on the first read in the handler's thread, so a client
    # that stalls or rejects the certificate does not block the accept loop.
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)

    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    if args.exit_with_stdin:
        threading.Thread(target=watch_stdin, args=(server,), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
