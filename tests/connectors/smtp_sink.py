#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) on loopback for the SMTP connector tests.

Usage: smtp_sink.py DIR [--auth USER:PASSWORD] [--starttls CERT KEY] [--tls CERT KEY]

Stores every accepted message as DIR/<n>.eml (the DATA bytes, dot-unstuffed, as received) and
DIR/<n>.json (envelope and what a mail client would show: mail_from, rcpt_tos, from, to,
subject, date, message_id, content_type, transfer_encoding, body — headers and body decoded).
RCPT answers by address: "busy@..." -> 450 (retryable), "nobody@..." -> 550 (permanent),
anything else is accepted. --auth requires AUTH (PLAIN/LOGIN) with that user and password
before MAIL (also over plain text, for loopback tests); --starttls offers STARTTLS with the
certificate, --tls speaks TLS from the first byte (SMTPS). Prints "LISTENING <port>" first.

aiosmtpd comes from Debian's python3-aiosmtpd, installed for the system Python: if the python3
on PATH lacks it (a pyenv, a venv), the script re-executes itself with /usr/bin/python3.
"""

import os
import sys

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError:
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != \
            os.path.realpath("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

import argparse
import email
import email.policy
import json
import logging
import signal
import socket
import ssl
import threading
import warnings


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.lock = threading.Lock()
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local == "busy":
            return "450 4.2.1 <%s>: mailbox busy, try again later" % address
        if local == "nobody":
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        try:
            body = msg.get_content()
        except (KeyError, LookupError, ValueError) as e:
            body = "<undecodable: %s>" % e
        with self.lock:
            self.count += 1
            n = self.count
        info = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "authenticated": bool(session.authenticated),
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "from": str(msg.get("From", "")),
            "to": str(msg.get("To", "")),
            "subject": str(msg.get("Subject", "")),
            "date": str(msg.get("Date", "")),
            "message_id": str(msg.get("Message-ID", "")),
            "mime_version": str(msg.get("MIME-Version", "")),
            "content_type": msg.get_content_type(),
            "charset": msg.get_content_charset() or "",
            "transfer_encoding": str(msg.get("Content-Transfer-Encoding", "")),
            "header_names": list(msg.keys()),
            "body": body.replace("\r\n", "\n"),
        }
        base = os.path.join(self.directory, str(n))
        with open(base + ".eml", "wb") as f:
            f.write(raw)
        # The .json appears last and whole, so a test that finds it can read both files.
        with open(base + ".json.tmp", "w", encoding="utf-8") as f:
            json.dump(info, f, ensure_ascii=False)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 2.0.0 Ok: queued as M%d" % n


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("directory")
    ap.add_argument("--auth", help="USER:PASSWORD required before MAIL")
    ap.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = ap.parse_args()
    # Tests provoke failed handshakes and AUTH without TLS on purpose: keep stderr quiet.
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")
    os.makedirs(args.directory, exist_ok=True)

    kwargs = {}
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword)
                  and auth_data.login.decode() == user
                  and auth_data.password.decode() == password)
            return AuthResult(success=ok, handled=False)  # failure: 535 from aiosmtpd

        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=False)
    if args.starttls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*args.starttls)
        kwargs.update(tls_context=ctx, require_starttls=True)
    if args.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*args.tls)
        kwargs.update(ssl_context=ctx)

    # aiosmtpd's Controller connects to its own port to start up, so it needs a real port:
    # take a free one (the window in which another process could take it is tiny).
    controller = Controller(Sink(args.directory), hostname="127.0.0.1", port=free_port(),
                            server_hostname="sink.test", **kwargs)
    controller.start()
    print("LISTENING %d" % controller.port, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    controller.stop()


if __name__ == "__main__":
    main()
