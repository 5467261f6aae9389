#!/usr/bin/env python3
"""A Docker registry token server for tests (the bearer-token flow Docker Hub uses).

Usage: scripts/token-server.py PORT DIR USER PASSWORD SERVICE ISSUER
Normally started by scripts/start-token-server.sh, which first creates DIR/token-key.pem and
DIR/token-ca.pem (the self-signed certificate the registry's `rootcertbundle` trusts).

GET /token?service=..&scope=repository:NAME:pull,push[&scope=...] with HTTP Basic USER:PASSWORD
  -> 200 {"token", "access_token", "expires_in": 300, "issued_at"}: an RS256 JWT granting the
     requested pull/push/delete actions on each requested repository (other scope types are
     dropped). Without or with wrong credentials -> 401 (no anonymous tokens, unlike Docker Hub,
     so an anonymous client fails at the token step).
GET /stats -> {"tokens_issued": N, "refused": M}, so a test can prove the bearer flow was used.
Each /token request is logged to DIR/token-server.log. Python standard library plus the openssl
CLI (it signs the tokens) only.
"""

import base64
import hmac
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TTL = 300
ACTIONS = {"pull", "push", "delete"}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    def __init__(self, dir, user, password, service, issuer):
        self.key = os.path.join(dir, "token-key.pem")
        self.user, self.password, self.service, self.issuer = user, password, service, issuer
        with open(os.path.join(dir, "token-ca.pem")) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        # distribution verifies the x5c chain against its rootcertbundle; the self-signed
        # certificate is both the chain and the root.
        self.header = b64url(json.dumps(
            {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]},
            separators=(",", ":")).encode())
        self.log = open(os.path.join(dir, "token-server.log"), "a", buffering=1)
        self.lock = threading.Lock()
        self.issued = self.refused = 0

    def check(self, authorization):
        """'none', 'bad' or 'ok' for an Authorization header."""
        if not authorization or not authorization.startswith("Basic "):
            return "none"
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except ValueError:
            return "bad"
        ok = hmac.compare_digest(user.encode(), self.user.encode()) & \
            hmac.compare_digest(password.encode(), self.password.encode())
        return "ok" if ok else "bad"

    @staticmethod
    def grants(scopes):
        """repository:NAME:a,b scopes (several per param, space-separated) -> access claims."""
        access = []
        for scope in " ".join(scopes).split():
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")  # NAME may itself hold a ':' (host:port)
            granted = [a for a in actions.split(",") if a in ACTIONS]
            if kind == "repository" and name and granted:
                access.append({"type": "repository", "name": name, "actions": granted})
        return access

    def token(self, access):
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": self.user, "aud": self.service, "exp": now + TTL,
                  "nbf": now, "iat": now, "jti": b64url(os.urandom(16)), "access": access}
        signing_input = f"{self.header}.{b64url(json.dumps(claims, separators=(',', ':')).encode())}"
        # RS256 is PKCS#1 v1.5 over SHA-256: exactly what `openssl dgst -sign` writes for RSA.
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                             input=signing_input.encode(), capture_output=True, check=True).stdout
        return f"{signing_input}.{b64url(sig)}", now


class Handler(BaseHTTPRequestHandler):
    server_version = "voiyd-token-server"

    def reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        ts = self.server.tokens
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/stats":
            with ts.lock:
                return self.reply(200, {"tokens_issued": ts.issued, "refused": ts.refused})
        if url.path != "/token":
            return self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
        query = urllib.parse.parse_qs(url.query)
        auth = ts.check(self.headers.get("Authorization"))
        if auth != "ok":
            with ts.lock:
                ts.refused += 1
            why = "credentials required" if auth == "none" else "invalid username or password"
            ts.log.write(f"{datetime.now(timezone.utc).isoformat()} GET {url.path} "
                         f"auth={auth} scopes={query.get('scope', [])} -> 401\n")
            return self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": why}]},
                              [("WWW-Authenticate", 'Basic realm="voiyd-test-token"')])
        access = ts.grants(query.get("scope", []))
        token, now = ts.token(access)
        with ts.lock:
            ts.issued += 1
        ts.log.write(f"{datetime.now(timezone.utc).isoformat()} GET {url.path} auth=ok "
                     f"service={query.get('service', [''])[0]} granted={json.dumps(access)} -> 200\n")
        issued_at = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.reply(200, {"token": token, "access_token": token, "expires_in": TTL,
                         "issued_at": issued_at})

    def log_message(self, format, *args):
        pass  # do_GET logs what matters; keep the default access log out of the way


def main():
    if len(sys.argv) != 7:
        sys.exit(f"usage: {sys.argv[0]} PORT DIR USER PASSWORD SERVICE ISSUER")
    port, dir, user, password, service, issuer = sys.argv[1:]
    server = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    server.tokens = TokenServer(dir, user, password, service, issuer)
    server.serve_forever()


if __name__ == "__main__":
    main()
