#!/usr/bin/env python3
"""A loopback stand-in for the AI providers, for connector and end-to-end tests.

Speaks the OpenAI chat completions API (POST /v1/chat/completions, also /chat/completions) and
the Anthropic messages API (POST /v1/messages) with the real services' response and error JSON
shapes: it checks the auth headers (Authorization: Bearer / x-api-key + anthropic-version) and
the required fields the way the services do, and answers deterministically: the text names a
digest of the prompt, usage counts are about 4 characters per token.

Control (for tests):
  POST /_script {"path_prefix": "/v1/messages", "responses": [{"status": 529}, ...]}
      queues answers for requests whose path starts with path_prefix, consumed in order.
      An item may hold: "status" (an error status answered with the provider's error JSON),
      "delay_ms" (sleep first), "malformed": true (200 with a body that is not JSON),
      "drop": "usage" (200 with that top-level field removed), "text" (the answer text),
      "message" (the error message of a "status" item), "headers" (extra response headers). Items without "status" answer normally after the delay.
  Models with a fixed behaviour: "always-500", "always-429", "always-529", "always-401",
  "slow-<ms>" (answers after <ms>), "echo-json" (answers a JSON object). Any other model answers.
  GET /_requests    every request received: method, path, headers, body (JSON or text)
  GET /_effects     {"effects": successful answers counted once per Idempotency-Key,
                     "requests": provider requests received}
  POST /_reset      forgets requests, effects and scripts

Usage: fake_ai.py [--openai-key KEY] [--anthropic-key KEY]   (an empty key turns the check off)
Prints "LISTENING <port>" first.
"""

import argparse
import hashlib
import json
import math
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OPENAI_PATHS = ("/v1/chat/completions", "/chat/completions")
ANTHROPIC_PATH = "/v1/messages"

OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key",
          "Incorrect API key provided. You can find your API key at "
          "https://platform.openai.com/account/api-keys."),
    403: ("invalid_request_error", "unsupported_country_region_territory",
          "Country, region, or territory not supported"),
    404: ("invalid_request_error", "model_not_found",
          "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded",
          "Rate limit reached for requests. Please try again in 20s."),
    500: ("server_error", None,
          "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later"),
}

ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified "
                              "resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate "
                              "limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def tokens(text):
    return max(1, math.ceil(len(text) / 4)) if text else 0


def digest(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


class State:
    def __init__(self, openai_key, anthropic_key):
        self.openai_key = openai_key
        self.anthropic_key = anthropic_key
        self.lock = threading.Lock()
        self.requests = []
        self.scripts = []  # [path_prefix, [responses]]
        self.effect_keys = set()
        self.effects_without_key = 0
        self.served = 0

    def next_scripted(self, path):
        with self.lock:
            for prefix, queue in self.scripts:
                if path.startswith(prefix) and queue:
                    return queue.pop(0)
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-ai/1"

    def log_message(self, fmt, *args):  # quiet: the test's output stays readable
        pass

    # ------------------------------------------------------------------ plumbing

    def send_json(self, status, obj, extra_headers=None):
        self.send_raw(status, json.dumps(obj).encode("utf-8"), "application/json",
                      extra_headers)

    def send_raw(self, status, body, content_type, extra_headers=None):
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra_headers or {}).items():
                self.send_header(k, str(v))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (deadline): nothing to answer

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    @property
    def state(self):
        return self.server.state

    # ------------------------------------------------------------------ control

    def do_GET(self):
        if self.path == "/_requests":
            with self.state.lock:
                return self.send_json(200, list(self.state.requests))
        if self.path == "/_effects":
            with self.state.lock:
                effects = len(self.state.effect_keys) + self.state.effects_without_key
                return self.send_json(200, {"effects": effects,
                                            "requests": self.state.served})
        self.send_json(404, {"error": {"message": "unknown path", "type": "invalid_request_error"}})

    def do_POST(self):
        raw = self.read_body()
        if self.path == "/_script":
            spec = json.loads(raw)
            with self.state.lock:
                self.state.scripts.append([spec.get("path_prefix", "/"),
                                           list(spec.get("responses", []))])
            return self.send_json(200, {"ok": True})
        if self.path == "/_reset":
            with self.state.lock:
                self.state.requests.clear()
                self.state.scripts.clear()
                self.state.effect_keys.clear()
                self.state.effects_without_key = 0
                self.state.served = 0
            return self.send_json(200, {"ok": True})

        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self.state.lock:
            self.state.served += 1
            self.state.requests.append({
                "method": "POST", "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body if body is not None else raw.decode("utf-8", "replace"),
            })
        if self.path in OPENAI_PATHS:
            return self.provider(OpenAI(self), body, raw)
        if self.path == ANTHROPIC_PATH:
            return self.provider(Anthropic(self), body, raw)
        self.send_json(404, {"error": {"message": f"Invalid URL (POST {self.path})",
                                       "type": "invalid_request_error"}})

    # ------------------------------------------------------------------ providers

    def provider(self, api, body, raw):
        script = self.state.next_scripted(self.path) or {}
        model = body.get("model") if isinstance(body, dict) else None
        if isinstance(model, str) and model.startswith("slow-"):
            script.setdefault("delay_ms", int(model[5:]))
        if script.get("delay_ms"):
            time.sleep(script["delay_ms"] / 1000.0)
        headers = script.get("headers")
        if script.get("status"):
            return api.error(script["status"], script.get("message"), headers)
        problem = api.check(body, raw)
        if problem:
            return api.error(problem[0], problem[1])
        if isinstance(model, str) and model.startswith("always-"):
            return api.error(int(model[7:]))
        if script.get("malformed"):
            return self.send_raw(200, b"<html><body>502 upstream hiccup</body></html>",
                                 "text/html", headers)
        answer = api.answer(body, script.get("text"))
        for field in ([script["drop"]] if script.get("drop") else []):
            answer.pop(field, None)
        key = self.headers.get("Idempotency-Key")
        with self.state.lock:
            if key:
                self.state.effect_keys.add(key)
            else:
                self.state.effects_without_key += 1
        self.send_json(200, answer, headers)


def prompt_text(messages, system=""):
    parts = [system] if system else []
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts.extend(b.get("text", "") for b in c if isinstance(b, dict))
    return "\n".join(parts)


def answer_text(prompt, wants_json, model):
    if wants_json or model == "echo-json":
        return json.dumps({"digest": digest(prompt), "prompt_chars": len(prompt)})
    return f"Answer to prompt {digest(prompt)} ({len(prompt)} characters)."


def cut(text, max_tokens):
    """Truncates to max_tokens (4 characters a token) like a real model running out."""
    if max_tokens is not None and tokens(text) > max_tokens:
        return text[: max_tokens * 4], True
    return text, False


class OpenAI:
    def __init__(self, h):
        self.h = h

    def error(self, status, message=None, headers=None):
        etype, code, default = OPENAI_ERRORS.get(status, ("server_error", None, "Error"))
        extra = dict(headers or {})
        if status == 429:
            extra.setdefault("retry-after", "20")
        self.h.send_json(status, {"error": {"message": message or default, "type": etype,
                                            "param": None, "code": code}}, extra)

    def check(self, body, raw):
        key = self.h.state.openai_key
        if key:
            auth = self.h.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return 401, ("You didn't provide an API key. You need to provide your API key "
                             "in an Authorization header using Bearer auth.")
            if auth[7:] != key:
                shown = auth[7:][:3] + "*" * 4 + auth[7:][-4:]
                return 401, f"Incorrect API key provided: {shown}."
        if not isinstance(body, dict):
            return 400, ("We could not parse the JSON body of your request. (HINT: This likely "
                         "means you aren't using your HTTP library correctly.)")
        if not body.get("model"):
            return 400, "you must provide a model parameter"
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            return 400, "Missing required parameter: 'messages'."
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant",
                                                                 "developer", "tool"):
                return 400, f"Invalid value for 'messages[{i}].role'."
        mt = body.get("max_tokens")
        if mt is not None and (not isinstance(mt, int) or mt < 1):
            return 400, "Invalid 'max_tokens': integer below minimum value."
        t = body.get("temperature")
        if t is not None and (not isinstance(t, (int, float)) or not 0 <= t <= 2):
            return 400, "Invalid 'temperature': decimal out of range."
        rf = body.get("response_format")
        if rf is not None and rf.get("type") == "json_object":
            if "json" not in prompt_text(msgs).lower():
                return 400, ("'messages' must contain the word 'json' in some form, to use "
                             "'response_format' of type 'json_object'.")
        return None

    def answer(self, body, text=None):
        msgs = body["messages"]
        prompt = prompt_text(msgs)
        wants_json = (body.get("response_format") or {}).get("type") == "json_object"
        text, truncated = cut(text if text is not None else
                              answer_text(prompt, wants_json, body["model"]),
                              body.get("max_tokens"))
        pt, ct = tokens(prompt) + 3 * len(msgs), tokens(text)
        return {
            "id": "chatcmpl-" + digest(prompt + str(time.time())),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"] + "-2024-07-18",
            "choices": [{"index": 0,
                         "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None,
                         "finish_reason": "length" if truncated else "stop"}],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
            "system_fingerprint": "fp_fake",
        }


class Anthropic:
    def __init__(self, h):
        self.h = h

    def error(self, status, message=None, headers=None):
        etype, default = ANTHROPIC_ERRORS.get(status, ("api_error", "Internal server error"))
        extra = {"request-id": "req_fake"}
        extra.update(headers or {})
        if status == 429:
            extra.setdefault("retry-after", "20")
        self.h.send_json(status, {"type": "error",
                                  "error": {"type": etype, "message": message or default}},
                         extra)

    def check(self, body, raw):
        key = self.h.state.anthropic_key
        if key:
            got = self.h.headers.get("x-api-key")
            if not got:
                return 401, "x-api-key header is required"
            if got != key:
                return 401, "invalid x-api-key"
        if not self.h.headers.get("anthropic-version"):
            return 400, "anthropic-version: header is required"
        if not isinstance(body, dict):
            return 400, "There was an issue with the format or content of your request."
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                return 400, f"{field}: Field required"
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            return 400, "max_tokens: Input should be a valid integer greater than 0"
        msgs = body["messages"]
        if not isinstance(msgs, list) or not msgs:
            return 400, "messages: at least one message is required"
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                return 400, (f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if "system" in body and not isinstance(body["system"], (str, list)):
            return 400, "system: Input should be a valid string"
        t = body.get("temperature")
        if t is not None and (not isinstance(t, (int, float)) or not 0 <= t <= 1):
            return 400, "temperature: Input should be less than or equal to 1"
        return None

    def answer(self, body, text=None):
        system = body.get("system") if isinstance(body.get("system"), str) else ""
        prompt = prompt_text(body["messages"], system)
        wants_json = "json" in system.lower()
        text, truncated = cut(text if text is not None else
                              answer_text(prompt_text(body["messages"]), wants_json,
                                          body["model"]),
                              body["max_tokens"])
        return {
            "id": "msg_" + digest(prompt + str(time.time())),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if truncated else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": tokens(prompt) + 4, "output_tokens": tokens(text)},
        }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--openai-key", default="sk-test-openai")
    ap.add_argument("--anthropic-key", default="sk-ant-test")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.state = State(args.openai_key, args.anthropic_key)
    print(f"LISTENING {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
