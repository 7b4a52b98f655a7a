# -*- test-case-name: tests.test_control -*-
"""
C{gossip status}, C{reload}, C{connect} and C{stop}: ask a running daemon
over its control port, and show the answer.

L{gossip.cli.main} imports this module only when one of them runs.
"""

import json
import signal
import sys

from twisted.internet.error import ConnectionClosed
from twisted.internet.task import react

from gossip.control.client import NoDaemon, ask
from gossip.control.commands import Connect, ControlError, Reload, Status, Stop, defaultControl

__all__ = ["command", "formatStatus"]

# Seconds between redraws of gossip status --watch.
WATCH_INTERVAL = 1.0


def _size(n):
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _ago(then, now):
    """
    How long ago C{then} was, shortly: C{"5 s ago"}, C{"3 min ago"}...
    """
    if then is None:
        return "-"
    return _duration(max(now - then, 0)) + " ago"


def _duration(seconds):
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"
    return f"{seconds // 86400:.0f} d {seconds % 86400 // 3600:.0f} h"


def _adds(n):
    return "1 add" if n == 1 else f"{n} adds"


def _table(header, rows, indent="  "):
    """
    Lines of C{rows} (lists of cells) under C{header}, columns aligned; a
    row that is a string is a note under the row before, as it is.
    """
    cells = [header] + [row for row in rows if not isinstance(row, str)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row):
        return indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()

    lines = [line(header)]
    for row in rows:
        lines.append(indent + "    " + row if isinstance(row, str) else line(row))
    return lines


def _state(peer):
    state = peer["state"]
    if state in ("waiting", "refused") and peer["retry"] is not None:
        wait = f"{peer['retryIn']:.0f} s before retry {peer['retry']}"
        return f"waiting {wait}" if state == "waiting" else f"refused, {wait}"
    return state


def _moved(moved, way):
    if moved is None:
        return "-"
    return f"{moved[way]} ({_size(moved[way + 'Bytes'])})"


def _peerName(peer):
    key = peer.get("key")
    if key is not None:
        return " ".join(part for part in (key["comment"], key["fingerprint"]) if part)
    return peer["peer"]


def formatStatus(status):
    """
    The daemon's status (a L{gossip.control.status} document) for people:
    short lines, columns aligned.
    """
    now = status["now"]
    lines = [
        f"gossip daemon, pid {status['pid']}, up {_duration(now - status['started'])}"
        + (f", control {status['control']}" if status["control"] else "")
    ]
    lines += ["", "logs"]
    lines += _table(
        ["PATH", "NODE", "ADDS", "SIZE", "IDENTITIES", "CORRUPT", "LAST ADD", "WATCHER"],
        [
            [
                log["path"],
                log.get("node") or "-",
                str(log["adds"]),
                _size(log["bytes"]),
                str(log["identities"]),
                str(log["corrupt"]),
                _ago(log["lastAdd"], now),
                log["watcher"] or "-",
            ]
            for log in status["logs"]
        ],
    )
    lines += ["", "peers"]
    rows = []
    for peer in status["peers"]:
        lag = "-" if peer["peerLacks"] is None else f"{peer['peerLacks']}/{peer['weLack']}"
        rows.append(
            [
                "out" if peer["direction"] == "outgoing" else "in",
                _peerName(peer),
                peer["log"] or "-",
                _state(peer),
                lag,
                f"{_moved(peer['session'], 'received')} / {_moved(peer['total'], 'received')}",
                f"{_moved(peer['session'], 'sent')} / {_moved(peer['total'], 'sent')}",
                _ago(peer["connectedSince"], now).replace(" ago", ""),
                _ago(peer["lastContact"], now),
            ]
        )
        if peer["why"]:
            failures = peer.get("failures") or 0
            times = f" ({failures} attempts in a row)" if failures > 1 else ""
            rows.append(f"last failure{times}: {peer['why']}")
    if rows:
        lines += _table(
            [
                "",
                "PEER",
                "LOG",
                "STATE",
                "LACKS/WE LACK",
                "RECEIVED (SESSION / ALL)",
                "SENT (SESSION / ALL)",
                "UP",
                "LAST CONTACT",
            ],
            rows,
        )
    else:
        lines.append("  none")
    lines += ["", "listeners"]
    if status["listeners"]:
        lines += _table(
            ["KIND", "ENDPOINT", "ADDRESS", "KEYS"],
            [
                [
                    listener["kind"],
                    listener["endpoint"],
                    listener["address"] or "-",
                    f"{listener['keys']} ({listener['keyCount']} "
                    + ("keys)" if listener["kind"] == "SSH" else "authorities)"),
                ]
                for listener in status["listeners"]
            ],
        )
    else:
        lines.append("  none")
    return "\n".join(lines) + "\n"


async def _status(reactor, options):
    answer = await ask(reactor, options.control, Status)
    status = json.loads(answer["status"])
    if options.json:
        return json.dumps(status, indent=2, sort_keys=True) + "\n"
    return formatStatus(status)


async def _watch(reactor, options):
    from twisted.internet.task import deferLater

    out = sys.stdout
    while True:
        text = await _status(reactor, options)
        if out.isatty():
            # Home, the new text with each line's rest cleared, then the
            # rest of the screen cleared: redrawn in place, without flicker.
            out.write("\x1b[H" + text.replace("\n", "\x1b[K\n") + "\x1b[J")
        else:
            out.write(text + "\n")
        out.flush()
        await deferLater(reactor, WATCH_INTERVAL, lambda: None)


async def _command(reactor, options):
    if options.command == "status":
        if options.watch:
            if sys.stdout.isatty():
                sys.stdout.write("\x1b[2J")
            await _watch(reactor, options)
        else:
            sys.stdout.write(await _status(reactor, options))
        return
    if options.command == "connect":
        answer = await ask(reactor, options.control, Connect, peer=options.peer)
    else:
        answer = await ask(reactor, options.control, {"reload": Reload, "stop": Stop}[options.command])
    sys.stdout.write(answer["result"] + "\n")


def command(options):
    """
    Run C{gossip status}, C{reload}, C{connect} or C{stop}.

    @return: the exit status: 0, 1 if no daemon answers or it could not
        do what was asked, 130 if interrupted (Ctrl-C).
    """
    if options.control is None:
        options.control = defaultControl()
    status = []

    def interrupted(signum, frame):
        # Ctrl-C: how --watch ends, and anything else may; no more to say.
        status[:] = [130]
        reactor.callFromThread(reactor.stop)

    async def run(reactor):
        signal.signal(signal.SIGINT, interrupted)
        try:
            await _command(reactor, options)
            status.append(0)
        except NoDaemon:
            sys.stderr.write(f"gossip: no daemon at {options.control}\n")
            status.append(1)
        except ControlError as e:
            sys.stderr.write(f"gossip: {e}\n")
            status.append(1)
        except ConnectionClosed:
            sys.stderr.write(f"gossip: the daemon at {options.control} hung up before it answered\n")
            status.append(1)

    from twisted.internet import reactor

    try:
        react(run)
    except SystemExit:
        pass
    sys.stdout.flush()
    return status[0] if status else 1
