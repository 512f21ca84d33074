#!/usr/bin/env python3
"""An SMTP server for the tests (aiosmtpd, an implementation apart from microseg's):
listens on 127.0.0.1 on a free port, prints the port, and writes one JSON line per message
received to OUT, parsed with Python's own e-mail parser: envelope, decoded headers and
bodies. Stops when its stdin closes or after --seconds.

    python tests/smtp_sink.py OUT [--seconds 120]
"""

import argparse
import asyncio
import email
import email.policy
import json
import sys
import threading

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, out):
        self.out = out

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        bodies = {}
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                bodies[part.get_content_subtype()] = part.get_content()
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(msg["From"]),
            "to": str(msg["To"]),
            "subject": str(msg["Subject"]),
            "message_id": str(msg["Message-ID"]),
            "date": str(msg["Date"]),
            "content_type": msg.get_content_type(),
            "text": bodies.get("plain"),
            "html": bodies.get("html"),
            "headers": list(msg.keys()),
            "list_unsubscribe": msg["List-Unsubscribe"] and str(msg["List-Unsubscribe"]),
            "list_unsubscribe_post": msg["List-Unsubscribe-Post"] and str(msg["List-Unsubscribe-Post"]),
        }
        with open(self.out, "a") as f:
            f.write(json.dumps(record) + "\n")
        return "250 OK"


async def main(args):
    loop = asyncio.get_running_loop()
    handler = Sink(args.out)
    server = await loop.create_server(lambda: SMTP(handler), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    done = asyncio.Event()
    # Stop when the test closes our stdin (or dies).
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(done.set)), daemon=True).start()
    try:
        await asyncio.wait_for(done.wait(), timeout=args.seconds)
    except asyncio.TimeoutError:
        pass
    server.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seconds", type=float, default=120)
    asyncio.run(main(ap.parse_args()))
