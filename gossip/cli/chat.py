# -*- test-case-name: tests.test_cli -*-
"""
C{gossip chat}: a chat room in a log.

Joining says C{n=NICK&join=1}, each line typed says C{n=NICK&m=LINE}, and
leaving (end of input or ^C) says C{n=NICK&quit=1}, as the original did, so
the two can chat with each other through one log.
"""

import os
import sys

from gossip.cli.follow import FileWaiter
from gossip.store.format import decodeBody
from gossip.store.logfile import entries, reverseEntries
from gossip.cli.output import readable, standardOutput

__all__ = ["chat", "describe"]

_HISTORY = 16


def describe(pairs, color=False):
    """
    The line a chat add shows as, or L{None} if it is not a chat add.
    """
    fields = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    nick = fields.get(b"n")
    if nick is None:
        return None
    shown = readable(nick)
    if color:
        shown = f"\033[32m{shown}\033[0m"
    if b"m" in fields:
        return f"<{shown}> {readable(fields[b'm'])}"
    if b"join" in fields:
        return f"* {shown} joined"
    if b"quit" in fields:
        return f"* {shown} quit"
    return None


def chat(log, nick, stdin=None, stdout=None):
    """
    Run a chat session on C{log} as C{nick} until input ends.

    @param stdin: a binary file to read lines typed from.
    @param stdout: a binary file to show the chat on.

    @return: the exit status.
    """
    stdin = sys.stdin.buffer if stdin is None else stdin
    stdout = standardOutput() if stdout is None else stdout
    color = stdout.isatty()

    def show(body):
        line = describe(decodeBody(body), color)
        if line is not None:
            # UTF-8 whatever the locale says: readable() escaped the rest.
            stdout.write(line.encode("utf-8") + b"\n")

    log.say([(b"n", nick), (b"join", b"1")])
    with log.open() as f:
        end = f.seek(0, os.SEEK_END)
        history = []
        for offset, record, body in reverseEntries(f, end):
            if body is not None and describe(decodeBody(body)) is not None:
                history.append(body)
                if len(history) == _HISTORY:
                    break
        for body in reversed(history):
            show(body)
        stdout.flush()
        offset = end
        waiter = FileWaiter(log.path)
        typed = b""
        try:
            while True:
                for offset, record, body in entries(f, offset):
                    offset += len(record) + 1
                    if body is not None:
                        show(body)
                stdout.flush()
                if waiter.wait([stdin.fileno()]):
                    data = os.read(stdin.fileno(), 65536)
                    if not data:
                        break
                    typed += data
                    *lines, typed = typed.split(b"\n")
                    for line in lines:
                        if line.strip():
                            log.say([(b"n", nick), (b"m", line.rstrip(b"\r"))])
        except KeyboardInterrupt:
            pass
        finally:
            waiter.close()
            if typed.strip():
                log.say([(b"n", nick), (b"m", typed)])
            log.say([(b"n", nick), (b"quit", b"1")])
    return 0
