"""A real SMTP server for Assent's email tests (aiosmtpd, loopback only).

usage: server.py PORT OUT_DIR [SCRIPT] [DELAY_MS]

SCRIPT is a comma-separated list of reply codes for successive DATA
commands (e.g. "451,250"); once it runs out every message is accepted.
Accepted messages are written to OUT_DIR as 1.eml, 2.eml, ...; every DATA
command, accepted or not, is appended to OUT_DIR/log as "<code> <Message-ID>".
DELAY_MS delays each DATA reply. Prints "ready" once it listens.
"""

import asyncio
import email
import os
import sys
import time

from aiosmtpd.controller import Controller

REPLIES = {
    250: "250 2.0.0 OK",
    451: "451 4.3.0 Try again later",
    550: "550 5.1.1 <{rcpt}>: no such user here",
}


class Handler:
    def __init__(self, out, script, delay):
        self.out = out
        self.script = script
        self.delay = delay
        self.accepted = 0

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        code = self.script.pop(0) if self.script else 250
        message = email.message_from_bytes(envelope.content)
        with open(os.path.join(self.out, "log"), "a") as log:
            log.write(f"{code} {message.get('Message-ID')}\n")
        if code == 250:
            self.accepted += 1
            path = os.path.join(self.out, f"{self.accepted}.eml")
            with open(path + ".tmp", "wb") as f:
                f.write(envelope.original_content or envelope.content)
            os.rename(path + ".tmp", path)
        return REPLIES[code].format(rcpt=",".join(envelope.rcpt_tos))


def main():
    port = int(sys.argv[1])
    out = sys.argv[2]
    script = [int(c) for c in sys.argv[3].split(",") if c] if len(sys.argv) > 3 else []
    delay = int(sys.argv[4]) / 1000 if len(sys.argv) > 4 else 0
    os.makedirs(out, exist_ok=True)
    controller = Controller(
        Handler(out, script, delay),
        hostname="127.0.0.1",
        port=port,
        enable_SMTPUTF8=True,
        decode_data=False,
    )
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
