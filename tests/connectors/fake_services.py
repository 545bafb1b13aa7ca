#!/usr/bin/env python3
"""Loopback stand-ins for the HTTP services the connectors call, for tests.

One ThreadingHTTPServer on 127.0.0.1 (port 0; prints "LISTENING <port>" first) that speaks:

  POST /2010-04-01/Accounts/{sid}/Messages.json   Twilio Messages (Basic auth, form To/From/Body)
  POST [/vNN.N]/{phone_number_id}/messages         WhatsApp Cloud API (Bearer, JSON text message)
  POST /services/...                               Slack incoming webhook (JSON with "text")
  POST /hooks/...                                  generic webhook (checks X-Auterity-Signature
                                                   when started with --webhook-secret)
  any  /status/{code}                              answers that status with a short text body
  any  /delay/{ms}                                 echo, after sleeping ms (benchmarks)
  any  other path                                  echo: {"method","path","query","headers","body"}

Checks what the real service checks and answers with its error shapes. Test control:

  GET  /_requests   every request so far: [{"method","path","headers","body"}] (names lower-case)
  GET  /_effects    the effects: successful sends, one per idempotency key
  POST /_script     {"path_prefix": "/x", "responses": [{"status": 500}, {"delay_ms": 3000},
                    {"malformed": true}, {"close": true}, {"status": 201, "body": ...},
                    {"status": 200, "body_bytes": N}, {"delay_after_effect_ms": 3000}]},
                    consumed
                    in order by matching requests before normal behaviour resumes
  POST /_reset      forgets requests, effects and scripts

A request with an Idempotency-Key (or Twilio's I-Twilio-Idempotency-Token) already answered
with success gets the first answer again and is not a new effect.
"""

import argparse
import base64
import hashlib
import hmac
import json
import re
import secrets
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TWILIO = re.compile(r"^/2010-04-01/Accounts/([A-Za-z0-9]+)/Messages\.json$")
WHATSAPP = re.compile(r"^(?:/v[0-9.]+)?/([0-9]+)/messages$")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.requests = []
        self.effects = []
        self.answered = {}  # (path, idempotency key) -> (status, headers, body)
        self.scripts = []  # [path_prefix, [responses]]

    def next_scripted(self, path):
        with self.lock:
            for entry in self.scripts:
                if path.startswith(entry[0]) and entry[1]:
                    return entry[1].pop(0)
        return None


STATE = State()
OPTIONS = None


def twilio_error(status, code, message):
    return status, {"Content-Type": "application/json"}, json.dumps({
        "code": code, "message": message, "status": status,
        "more_info": f"https://www.twilio.com/docs/errors/{code}"}).encode()


def graph_error(status, code, message, kind="OAuthException"):
    return status, {"Content-Type": "application/json"}, json.dumps({"error": {
        "message": message, "type": kind, "code": code,
        "fbtrace_id": "A" + secrets.token_hex(8)}}).encode()


def text_answer(status, text, content_type="text/plain; charset=utf-8"):
    return status, {"Content-Type": content_type}, text.encode()


def json_answer(status, value):
    return status, {"Content-Type": "application/json"}, json.dumps(value).encode()


def twilio(handler, sid, body):
    auth = handler.headers.get("Authorization", "")
    expected = base64.b64encode(f"{sid}:{OPTIONS.twilio_token}".encode()).decode()
    if sid != OPTIONS.twilio_sid or auth != f"Basic {expected}":
        return twilio_error(401, 20003, "Authenticate")
    if not handler.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
        return twilio_error(400, 20001, "Content-Type must be application/x-www-form-urlencoded")
    form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    to = form.get("To", [""])[0]
    sender = form.get("From", [""])[0]
    text = form.get("Body", [""])[0]
    if not to:
        return twilio_error(400, 21604, "A 'To' phone number is required.")
    if not sender:
        return twilio_error(400, 21603, "A 'From' phone number is required.")
    if not text:
        return twilio_error(400, 21602, "Message body is required.")
    if not E164.match(to):
        return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}")
    return json_answer(201, {"sid": "SM" + secrets.token_hex(16), "account_sid": sid,
                             "status": "queued", "to": to, "from": sender, "body": text})


def whatsapp(handler, body):
    if handler.headers.get("Authorization", "") != f"Bearer {OPTIONS.whatsapp_token}":
        return graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
    try:
        msg = json.loads(body)
    except ValueError:
        return graph_error(400, 100, "(#100) Invalid parameter")
    if not isinstance(msg, dict) or msg.get("messaging_product") != "whatsapp":
        return graph_error(400, 100, "(#100) The parameter messaging_product is required.")
    if not msg.get("to"):
        return graph_error(400, 100, "(#100) The parameter to is required.")
    if msg.get("type", "text") != "text" or not (msg.get("text") or {}).get("body"):
        return graph_error(400, 100, "(#100) The parameter text['body'] is required.")
    to = msg["to"]
    if not re.match(r"^\+?[0-9]{7,15}$", to):
        return graph_error(400, 131030, "(#131030) Recipient phone number not in allowed list")
    return json_answer(200, {"messaging_product": "whatsapp",
                             "contacts": [{"input": to, "wa_id": to.lstrip("+")}],
                             "messages": [{"id": "wamid." + secrets.token_hex(12)}]})


def slack(handler, body):
    # Slack answers in text/html with a short code, not JSON.
    try:
        msg = json.loads(body)
    except ValueError:
        return text_answer(400, "invalid_payload", "text/html")
    if handler.path.endswith("/revoked"):
        return text_answer(403, "invalid_token", "text/html")
    if not isinstance(msg, dict) or not isinstance(msg.get("text"), str) or not msg["text"]:
        return text_answer(400, "no_text", "text/html")
    return text_answer(200, "ok", "text/html")


def webhook(handler, body):
    if OPTIONS.webhook_secret:
        mac = hmac.new(OPTIONS.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(handler.headers.get("X-Auterity-Signature", ""),
                                   f"sha256={mac}"):
            return json_answer(401, {"error": "bad signature"})
    try:
        json.loads(body)
    except ValueError:
        return json_answer(400, {"error": "body is not JSON"})
    return json_answer(200, {"received": True})


def echo(handler, path, body):
    parts = urlsplit(path)
    m = re.match(r"^/status/([0-9]{3})$", parts.path)
    if m:
        return text_answer(int(m.group(1)), f"status {m.group(1)} as asked")
    m = re.match(r"^/delay/([0-9]{1,6})$", parts.path)
    if m:
        time.sleep(int(m.group(1)) / 1000.0)  # a remote service that takes this long
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = body.decode("utf-8", "replace")
    return json_answer(200, {"method": handler.command, "path": parts.path, "query": parts.query,
                             "headers": {k.lower(): v for k, v in handler.headers.items()},
                             "body": parsed})


def route(handler, path, body):
    only = urlsplit(path).path
    m = TWILIO.match(only)
    if m and handler.command == "POST":
        return "twilio", twilio(handler, m.group(1), body)
    m = WHATSAPP.match(only)
    if m and handler.command == "POST":
        return "whatsapp", whatsapp(handler, body)
    if only.startswith("/services/") and handler.command == "POST":
        return "slack", slack(handler, body)
    if only.startswith("/hooks/") and handler.command == "POST":
        return "webhook", webhook(handler, body)
    return "echo", echo(handler, path, body)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, headers, body):
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (deadline); nothing to tell it
        self.close_connection = True

    def handle_any(self):
        length = int(self.headers.get("Content-Length", "0") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path
        if path.startswith("/_"):
            return self.control(path, body)
        with STATE.lock:
            STATE.requests.append({
                "method": self.command, "path": path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace")})
        scripted = STATE.next_scripted(path)
        if scripted is not None:
            time.sleep(scripted.get("delay_ms", 0) / 1000.0)
            if scripted.get("close"):
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if scripted.get("malformed"):
                return self.answer(scripted.get("status", 200),
                                   {"Content-Type": "application/json"}, b'{"sid": "SM1", oops')
            if "status" in scripted:
                b = scripted.get("body", f"scripted {scripted['status']}")
                if "body_bytes" in scripted:
                    b = "x" * scripted["body_bytes"]
                headers = dict(scripted.get("headers", {}))
                if isinstance(b, str):
                    headers.setdefault("Content-Type", "text/plain; charset=utf-8")
                    b = b.encode()
                else:
                    headers.setdefault("Content-Type", "application/json")
                    b = json.dumps(b).encode()
                return self.answer(scripted["status"], headers, b)
            # delay only: carry on normally
        key = self.headers.get("Idempotency-Key") or self.headers.get("I-Twilio-Idempotency-Token")
        with STATE.lock:
            if key and (urlsplit(path).path, key) in STATE.answered:
                return self.answer(*STATE.answered[(urlsplit(path).path, key)])
        kind, (status, headers, out) = route(self, path, body)
        with STATE.lock:
            if 200 <= status < 300 and self.command != "GET":
                if key:
                    STATE.answered[(urlsplit(path).path, key)] = (status, headers, out)
                effect = {"kind": kind, "path": urlsplit(path).path, "key": key,
                          "body": body.decode("utf-8", "replace")}
                if kind == "twilio":
                    effect["form"] = {k: v[0] for k, v in parse_qs(effect["body"]).items()}
                STATE.effects.append(effect)
        if scripted is not None and scripted.get("delay_after_effect_ms"):
            # The effect happened; the answer is late (a worker killed meanwhile never acks).
            time.sleep(scripted["delay_after_effect_ms"] / 1000.0)
        self.answer(status, headers, out)

    def control(self, path, body):
        if path == "/_requests":
            with STATE.lock:
                return self.answer(*json_answer(200, STATE.requests))
        if path == "/_effects":
            with STATE.lock:
                return self.answer(*json_answer(200, STATE.effects))
        if path == "/_reset":
            with STATE.lock:
                STATE.reset()
            return self.answer(*json_answer(200, {"ok": True}))
        if path == "/_script":
            spec = json.loads(body)
            with STATE.lock:
                STATE.scripts.append([spec.get("path_prefix", "/"), list(spec["responses"])])
            return self.answer(*json_answer(200, {"ok": True}))
        return self.answer(*json_answer(404, {"error": "unknown control path"}))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen backlog: many workers connect at once (the default is 5)
    tls_context = None

    def get_request(self):
        conn, addr = super().get_request()
        if self.tls_context:
            # Handshake in the handler thread, so a client that refuses the certificate does
            # not stall the accept loop.
            conn = self.tls_context.wrap_socket(conn, server_side=True,
                                                do_handshake_on_connect=False)
        return conn, addr

    def handle_error(self, request, client_address):
        pass  # aborted handshakes and clients that gave up are part of the tests


def main():
    global OPTIONS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--twilio-sid", default="AC123")
    p.add_argument("--twilio-token", default="twilio-token")
    p.add_argument("--whatsapp-token", default="whatsapp-token")
    p.add_argument("--webhook-secret", default="")
    OPTIONS = p.parse_args()
    server = Server(("127.0.0.1", 0), Handler)
    if OPTIONS.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*OPTIONS.tls)
        server.tls_context = ctx
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
