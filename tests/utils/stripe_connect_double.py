"""A small stand-in for Stripe Connect, which localstripe lacks: `POST /v1/accounts`,
`GET /v1/accounts/{id}`, `POST /v1/transfers` (honouring `Idempotency-Key`) and
`GET /v1/transfers/{id}`, in Stripe's wire format (form-encoded requests, JSON objects and
errors), so the real `stripe` SDK talks to it unchanged.

    with ConnectDouble() as double:
        settings.stripe_connect_api_base = double.url
        ...
        double.transfers  # what was sent, by id
        double.fail_next = 1  # the next transfer answers 402 card_declined-like error
        double.set_payouts_enabled(acct_id, True)  # the account finished Stripe's onboarding

A new (Express) account cannot receive payouts until its owner finishes onboarding, as on
Stripe: `payouts_enabled` starts false (`payouts_enabled_on_create` changes that).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl


def _nest(form: list[tuple[str, str]]) -> dict[str, Any]:
    """`metadata[k]=v` and `a[b][c]=v` into nested dicts, as Stripe parses them."""
    out: dict[str, Any] = {}
    for key, value in form:
        parts = key.replace("]", "").split("[")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


class ConnectDouble:
    def __init__(self) -> None:
        self.accounts: dict[str, dict[str, Any]] = {}
        self.transfers: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_next = 0
        self.payouts_enabled_on_create = False
        self._idem: dict[str, tuple[int, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ConnectDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set_payouts_enabled(self, account_id: str, enabled: bool) -> None:
        with self._lock:
            self.accounts[account_id]["payouts_enabled"] = enabled

    def account_of(self, provider_id: str) -> str:
        """The connected account created for a provider (by its metadata)."""
        (acct,) = [
            a for a in self.accounts.values() if a["metadata"].get("provider_id") == provider_id
        ]
        return str(acct["id"])

    def _create(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        now = int(time.time())
        if path == "/v1/accounts":
            acct = {
                "id": "acct_" + secrets.token_hex(8), "object": "account", "type": body.get(
                    "type", "express"), "metadata": body.get("metadata", {}),
                "business_profile": body.get("business_profile", {}), "created": now,
                "charges_enabled": False, "livemode": False,
                "payouts_enabled": self.payouts_enabled_on_create,
            }  # fmt: skip
            self.accounts[acct["id"]] = acct
            return 200, acct
        if path == "/v1/transfers":
            if self.fail_next > 0:
                self.fail_next -= 1
                return 400, _error("balance_insufficient", "Insufficient funds in the balance.")
            dest = body.get("destination")
            if dest not in self.accounts:
                return 400, _error("resource_missing", f"No such destination: '{dest}'")
            tr = {
                "id": "tr_" + secrets.token_hex(8), "object": "transfer",
                "amount": int(body["amount"]), "amount_reversed": 0,
                "currency": body["currency"], "destination": dest,
                "transfer_group": body.get("transfer_group"),
                "metadata": body.get("metadata", {}), "created": now, "livemode": False,
                "reversed": False, "reversals": {"object": "list", "data": [], "has_more": False,
                                                  "url": "/v1/transfers/x/reversals"},
            }  # fmt: skip
            self.transfers[tr["id"]] = tr
            return 200, tr
        return 404, _error("resource_missing", f"Unrecognized request URL (POST: {path})")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", "req_" + secrets.token_hex(6))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Bearer sk_"):
                    return True
                self._send(401, _error("api_key_invalid", "Invalid API Key provided."))
                return False

            def do_POST(self) -> None:
                if not self._authorized():
                    return
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True)
                body = _nest(form)
                key = self.headers.get("Idempotency-Key")
                with double._lock:
                    double.requests.append(("POST", self.path))
                    cached = double._idem.get(f"{self.path} {key}") if key else None
                    if cached is not None:
                        status, obj = cached
                    else:
                        status, obj = double._create(self.path, body)
                        if key and status == 200:
                            double._idem[f"{self.path} {key}"] = (status, obj)
                self._send(status, obj)

            def do_GET(self) -> None:
                if not self._authorized():
                    return
                kind, _, obj_id = self.path.removeprefix("/v1/").partition("/")
                store = {"transfers": double.transfers, "accounts": double.accounts}.get(kind)
                if store is None or obj_id not in store:
                    self._send(404, _error("resource_missing", f"No such object: '{obj_id}'"))
                    return
                self._send(200, store[obj_id])

        return Handler


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"type": "invalid_request_error", "code": code, "message": message}}
