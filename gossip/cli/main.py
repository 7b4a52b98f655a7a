# -*- test-case-name: tests.test_cli -*-
"""
The C{gossip} command.

C{say} and C{ask} import neither Twisted nor anything else slow: they are
the paths scripts call in loops.  Commands that need the reactor import it
when they run.
"""

import os
import sys

from gossip import __version__, counted
from gossip.store.logfile import RESERVED, Log, LogError

__all__ = ["main"]


class UsageError(Exception):
    """
    A mistake on the command line, reported in one line.
    """


def _pair(text):
    """
    Split a C{NAME=VALUE} argument into bytes, exactly as given.
    """
    name, sep, value = os.fsencode(text).partition(b"=")
    if not sep:
        raise UsageError(f"{text!r} is not NAME=VALUE")
    if not name:
        raise UsageError(f"{text!r} has an empty name")
    return name, value


def _term(text):
    """
    Split an ask term, C{NAME} or C{NAME=VALUE}, into bytes.
    """
    name, sep, value = os.fsencode(text).partition(b"=")
    if not name:
        raise UsageError(f"{text!r} has an empty name")
    return name, (value if sep else None)


def _readValue(path):
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror}") from None


def _say(options):
    pairs = [_pair(text) for text in options.pairs]
    for text in options.file:
        name, path = _pair(text)
        pairs.append((name, _readValue(os.fsdecode(path))))
    if not pairs:
        raise UsageError("say: nothing to say: give at least one NAME=VALUE")
    for name, value in pairs:
        if name in RESERVED:
            raise UsageError(
                f"say: {os.fsdecode(name)!r} is reserved (gossip writes by, at and I itself)"
            )
    line = Log(options.log, fsync=options.fsync).say(pairs)
    if options.verbose:
        sys.stdout.buffer.write(line)
    return 0


def _ask(options):
    if options.log is None:
        raise UsageError("ask: give the LOG to read, then any NAME or NAME=VALUE terms to match")
    from gossip.cli.output import FORMATS, Damage, follow, lastMatches, printMatches
    from gossip.store.query import Query

    query = Query([_term(text) for text in options.terms])
    write = FORMATS[options.format]
    log = Log(options.log)
    damage = Damage(options.log)
    with log.open() as f:
        if options.last is not None:
            offset = lastMatches(f, query, options.last, write, options.log, damage=damage)
        else:
            offset = printMatches(f, 0, query, write, options.log, damage=damage)
        if damage.noLog():
            # Read to its start (--last stops only once it has found adds).
            raise LogError(
                f"{os.fsdecode(options.log)}: not a gossip log: "
                f"{damage.count} lines, not one intact add"
            )
        if options.follow:
            follow(log, f, offset, query, write, damage=damage)
    return 0


def _check(options):
    """
    Verify every line of a log and rebuild its cache: exit 1 if any line
    is damaged.
    """
    try:
        scan = Log(options.log).check()
    except LogError as e:
        # Not a verdict on the log: the log could not be checked at all.
        raise UsageError(f"check: {e}") from None
    out = sys.stdout
    name = options.log
    for offset, length in scan.regions:
        out.write(f"{name}: damaged: {length} bytes at byte {offset}\n")
    for by, lacking in sorted(scan.missing().items()):
        ranges = ", ".join(
            f"{start}" if end == start + 1 else f"{start}-{end - 1}"
            for start, end in lacking.ranges()
        )
        origin = by.decode("utf-8", "backslashreplace")
        out.write(f"{name}: {origin} lacks at {ranges}\n")
    adds = sum(len(held) for held in scan.state.have.values())
    damaged = sum(length for offset, length in scan.regions)
    out.write(
        f"{name}: {counted(adds, 'add')} intact, {counted(len(scan.regions), 'damaged region')} "
        f"({damaged} bytes); cache rebuilt\n"
    )
    return 1 if scan.regions else 0


def _chat(options):
    from gossip.cli.chat import chat

    nick = options.nick or os.environ.get("LOGNAME") or os.environ.get("USER") or "anonymous"
    return chat(Log(options.log), nick.encode("utf-8", "surrogateescape"))


def _parser():
    """
    The parser of every command's arguments, which also writes C{--help}.

    argparse is imported here, not at the top, because importing it and
    building this parser take longer than C{say} itself; see L{_quickOptions}.
    """
    import argparse

    class _Parser(argparse.ArgumentParser):
        _intermixing = False

        def error(self, message):
            raise UsageError(f"{message} (see '{self.prog} --help')")

        def parse_known_args(self, args=None, namespace=None):
            # Options may follow positional arguments (gossip ask LOG --last 5
            # NAME), which plain parsing rejects once a nargs="*" positional has
            # matched nothing.  Intermixed parsing calls back into this method,
            # and cannot handle subcommands or REMAINDER.
            intermixable = not any(
                action.nargs in (argparse.PARSER, argparse.REMAINDER)
                for action in self._actions
                if not action.option_strings
            )
            if self._intermixing or not intermixable:
                return super().parse_known_args(args, namespace)
            self._intermixing = True
            try:
                return self.parse_known_intermixed_args(args, namespace)
            finally:
                self._intermixing = False

    parser = _Parser(
        prog="gossip",
        description="An append-only log of name-value adds, shared between machines.",
    )
    parser.add_argument("--version", action="version", version=f"gossip {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    say = commands.add_parser(
        "say",
        help="append one add to a log, creating the log if needed",
        description=(
            "Append one add, made of the NAME=VALUE pairs in order, to LOG, "
            "creating LOG (and its identity) if needed.  Values are taken as "
            "the bytes given; --file reads a value from a file, or from "
            "standard input with -, for values argv cannot carry (NUL bytes)."
        ),
    )
    say.add_argument("--fsync", action="store_true", help="return only once the add is on disk")
    say.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a pair whose value is the contents of PATH (- for stdin), after the others",
    )
    say.add_argument("-v", "--verbose", action="store_true", help="print the line written")
    say.add_argument("log", metavar="LOG")
    say.add_argument("pairs", nargs="*", metavar="NAME=VALUE")
    say.set_defaults(run=_say)

    ask = commands.add_parser(
        "ask",
        help="print the adds of a log that match a query",
        description=(
            "Print the adds of LOG that have every NAME asked for and, where "
            "values are given for a NAME, one of those values.  No terms "
            "print every add."
        ),
    )
    ask.add_argument("-f", "--follow", action="store_true", help="keep printing new matching adds")
    ask.add_argument(
        "--format",
        choices=_OUTPUT_FORMATS,
        default="text",
        help="text for people; json, one lossless JSON value per add; raw, the log's own lines",
    )
    ask.add_argument("--last", type=int, metavar="N", help="only the last N matching adds")
    # LOG is checked by _ask: argparse would call the terms required too.
    ask.add_argument("log", nargs="?", metavar="LOG")
    ask.add_argument("terms", nargs="*", metavar="NAME|NAME=VALUE")
    ask.set_defaults(run=_ask)

    check = commands.add_parser(
        "check",
        help="verify every line of a log, and rebuild its cache",
        description=(
            "Verify every line of LOG; print each damaged region (its length "
            "and byte offset) and, for each origin, the ats missing from its "
            "run; rebuild LOG's cache from what is intact, so that the next "
            "sync fetches the lost adds from any peer that holds them.  Exits "
            "1 if any line is damaged, 0 if none, 2 if LOG cannot be checked."
        ),
    )
    check.add_argument("log", metavar="LOG")
    check.set_defaults(run=_check)

    chat = commands.add_parser(
        "chat",
        help="chat through a log",
        description=(
            "Show the last 16 chat messages in LOG and new ones as they come, "
            "and say each line typed as a message from NICK.  ^D leaves."
        ),
    )
    chat.add_argument("log", metavar="LOG")
    chat.add_argument("nick", nargs="?", metavar="NICK", help="default: your login name")
    chat.set_defaults(run=_chat)

    serve = commands.add_parser(
        "serve",
        help="speak the sync protocol on standard input and output",
        description=(
            "Sync LOG with whoever is at the other end of standard input and "
            "output: the command a peer runs, e.g. through ssh."
        ),
    )
    serve.add_argument("--stdio", action="store_true", required=True, help="use stdin and stdout")
    serve.add_argument("--once", action="store_true", help="stop once both logs have caught up")
    serve.add_argument(
        "--create",
        action="store_true",
        help="create LOG if it does not exist (without it, a mistyped LOG is an error)",
    )
    serve.add_argument(
        "--nodes",
        type=_nodesArgument,
        metavar="ID[,ID...]",
        help="refuse a peer that says it is another node (an ID is the I= of a log's first add)",
    )
    _syncOptions(serve)
    serve.add_argument("log", metavar="LOG")
    serve.set_defaults(run=_reactorCommand("serve"), peerCommand=None)

    sync = commands.add_parser(
        "sync",
        usage=(
            "gossip sync [-h] [--once] [--create] [options] LOG PEER\n"
            "       gossip sync [-h] [--once] [--create] [options] LOG -- COMMAND..."
        ),
        help="sync a log with a peer",
        description=(
            "Sync LOG with PEER (another log file, or a URL: "
            "ssh://[USER@]HOST[:PORT][/LOG] or tls://HOST[:PORT][/LOG]), or with whatever COMMAND "
            "runs (e.g. ssh host gossip serve --stdio LOG), then keep "
            "streaming new adds both ways (or stop, with --once)."
        ),
    )
    sync.add_argument("--once", action="store_true", help="stop once both logs have caught up")
    sync.add_argument("--create", action="store_true", help="create LOG if it does not exist")
    _syncOptions(sync)
    _peerOptions(sync)
    sync.add_argument("log", metavar="LOG")
    sync.add_argument("peer", nargs="?", metavar="PEER")
    # main() takes "-- COMMAND..." off the arguments before parsing.
    sync.set_defaults(run=_reactorCommand("sync"), peerCommand=None)

    clone = commands.add_parser(
        "clone",
        help="make a new log from another",
        description=(
            "Make NEWLOG, a new log with its own identity, and sync it once "
            "from SOURCE (a log file or a peer URL), showing progress on a terminal."
        ),
    )
    _syncOptions(clone)
    _peerOptions(clone)
    clone.add_argument("source", metavar="SOURCE")
    clone.add_argument("newlog", metavar="NEWLOG")
    clone.set_defaults(run=_reactorCommand("clone"), peerCommand=None)

    folder = commands.add_parser(
        "folder",
        help="keep a folder of files and a log's documents as one",
        description=(
            "Keep every file under DIR and the documents of LOG as one, both "
            "ways: a saved file becomes an add, and an add (from any peer) "
            "changes its file, text merged a character at a time; see "
            "docs/documents.md.  Runs until interrupted, or one pass with --once."
        ),
    )
    folder.add_argument("--once", action="store_true", help="one pass, then exit")
    folder.add_argument("--poll", action="store_true", help="poll instead of using inotify")
    folder.add_argument("log", metavar="LOG")
    folder.add_argument("dir", metavar="DIR")
    folder.set_defaults(run=_documentsCommand("folder"))

    doc = commands.add_parser(
        "doc",
        help="list, show and trace the documents in a log",
        description="Look at the documents a log holds (see gossip folder).",
    )
    actions = doc.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    docList = actions.add_parser(
        "list", help="each document: path, size, last change, by whom",
        description="List LOG's documents: path, size in bytes (or deleted), "
        "the time of the last change and the node that made it.",
    )
    docList.add_argument("log", metavar="LOG")
    docShow = actions.add_parser(
        "show", help="print a document as it stands, or stood",
        description="Print the document PATH of LOG as it stands, or with "
        "--at as it stood at a time (the changes stamped no later than it).",
    )
    docShow.add_argument(
        "--at", type=_timeArgument, metavar="TIME",
        help="seconds since 1970, or YYYY-MM-DD[THH:MM[:SS]] (local time)",
    )
    docShow.add_argument("log", metavar="LOG")
    docShow.add_argument("path", metavar="PATH")
    docHistory = actions.add_parser(
        "history", help="a document's changes: time, node, lines added and removed",
        description="Print each change to the document PATH of LOG, in the "
        "log's order: its time, the node that made it, and the lines it "
        "added and removed.",
    )
    docHistory.add_argument("log", metavar="LOG")
    docHistory.add_argument("path", metavar="PATH")
    doc.set_defaults(run=_documentsCommand("doc"))

    control = (
        "the daemon's control endpoint, as its --control gives it (default "
        "unix:$XDG_CONFIG_HOME/gossip/control.sock, ~/.config/gossip/control.sock "
        "without it)"
    )
    status = commands.add_parser(
        "status",
        help="show what a running daemon is doing",
        description=(
            "Show what the daemon (twistd gossip) is doing: each log, each peer "
            "(outgoing and incoming: its state, why it last failed, how far "
            "apart the logs are, what moved) and each listener."
        ),
    )
    status.add_argument("--control", metavar="ENDPOINT", help=control)
    status.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    status.add_argument(
        "--watch", action="store_true", help="show it again every second, in place on a terminal"
    )
    status.set_defaults(run=_controlCommand)
    for name, help, description in [
        (
            "reload",
            "make a running daemon read its keys and certificates again",
            "Make the daemon read authorized_keys and its TLS files again (as "
            "SIGHUP does): sessions whose keys may no longer connect are "
            "ended, the others kept.  known_hosts is read at every connection.",
        ),
        (
            "connect",
            "make a running daemon retry its waiting peers now",
            "Make the daemon retry now the peers it waits to retry (all, or "
            "PEER: its URL or command, or a part that names only one).",
        ),
        ("stop", "stop a running daemon", "Stop the daemon."),
    ]:
        sub = commands.add_parser(name, help=help, description=description)
        sub.add_argument("--control", metavar="ENDPOINT", help=control)
        if name == "connect":
            sub.add_argument("peer", nargs="?", metavar="PEER")
        sub.set_defaults(run=_controlCommand)
    return parser


def _controlCommand(options):
    from gossip.cli.control import command

    return command(options)


def _nodesArgument(text):
    """
    C{serve --nodes}: node identities separated by commas, none empty.
    """
    import argparse

    nodes = frozenset(os.fsencode(node.strip()) for node in text.split(","))
    if b"" in nodes:
        raise argparse.ArgumentTypeError("an empty node identity")
    return nodes


def _timeArgument(text):
    import argparse

    from gossip.cli.documents import parseTime

    try:
        return parseTime(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _documentsCommand(name):
    def run(options):
        from gossip.cli import documents

        return getattr(documents, name)(options)

    return run


def _syncOptions(parser):
    from gossip.cli.options import SESSION

    for option in SESSION:
        _addOption(parser, option)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")


def _peerOptions(parser):
    from gossip.cli.options import PEER

    group = parser.add_argument_group(
        "peers named by URL (ssh://[USER@]HOST[:PORT][/LOG], tls://HOST[:PORT][/LOG];"
        " ports 22 and 7423 unless given)"
    )
    for option in PEER:
        _addOption(group, option)


def _addOption(parser, option):
    """
    Add a shared option (a L{gossip.cli.options.Option}) to C{parser}.
    """
    import argparse

    from gossip.cli.options import reader

    names = ([f"-{option.short}"] if option.short else []) + [f"--{option.name}"]
    help = option.help
    if option.hidden:
        help = argparse.SUPPRESS
    elif option.shown is not None:
        help = f"{help} (default {option.shown})"
    if option.kind == "flag":
        parser.add_argument(*names, action="store_true", help=help)
        return
    parser.add_argument(
        *names,
        action="append" if option.kind == "append" else "store",
        type=reader(option.read, argparse.ArgumentTypeError),
        default=option.default,
        metavar=option.metavar,
        help=help,
    )


def _splitPeerCommand(argv):
    """
    Take C{-- COMMAND...} off the arguments of C{gossip sync}.

    argparse cannot tell an optional PEER from a command's first word after
    C{--}, nor a command's own options from gossip's.

    @return: the arguments before C{--}, and the command (L{None} if there
        is no C{--}).
    """
    # The top-level parser's options take no values: the first argument
    # that is not an option names the subcommand.
    subcommand = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), None)
    if subcommand is None or argv[subcommand] != "sync" or "--" not in argv[subcommand:]:
        return argv, None
    split = argv.index("--", subcommand)
    return argv[:split], argv[split + 1 :]


def _reactorCommand(name):
    def run(options):
        if options.peerCommand is not None:
            if not options.peerCommand:
                raise UsageError(f"{name}: nothing after --")
            if options.peer is not None:
                raise UsageError(f"{name}: give a PEER or -- COMMAND, not both")
        elif name == "sync" and options.peer is None:
            raise UsageError("sync: name a peer: a log file, or -- COMMAND...")
        if name == "clone":
            _prepareClone(options)
        if name in ("sync", "clone"):
            _startPeer(options)
        from gossip.cli import commands

        return getattr(commands, name)(options)

    return run


def _prepareClone(options):
    """
    Check C{gossip clone}'s names, and make its options those of a one-shot
    sync that creates NEWLOG.
    """
    from gossip.cli.cloning import cloneMarker, markClone, unfinishedClone
    from gossip.transport.urls import URLError, isURL, parseURL

    marker = cloneMarker(options.newlog)
    try:
        unfinished = unfinishedClone(options.newlog)
    except OSError as e:
        raise LogError(f"clone: {marker}: {e.strerror}") from None
    if unfinished is not None and unfinished != options.source:
        raise LogError(
            f"clone: {options.newlog} is an unfinished clone of {unfinished}: "
            f"finish it with gossip clone {unfinished} {options.newlog}, or remove "
            f"it and {marker}"
        )
    resuming = unfinished is not None and os.path.lexists(options.newlog)
    if os.path.lexists(options.newlog) and not resuming:
        raise LogError(f"clone: {options.newlog} already exists")
    if isURL(options.source):
        try:
            source = parseURL(options.source).log
        except URLError as e:
            raise LogError(f"clone: {e}") from None
    elif not os.path.lexists(options.source):
        raise LogError(f"clone: {options.source}: No such file or directory")
    else:
        source = os.fsencode(os.path.basename(options.source))
    new = os.fsencode(os.path.basename(options.newlog))
    if source is not None and source != new and not options.any_name:
        raise LogError(
            f"clone: {os.fsdecode(new)!r} is not named {os.fsdecode(source)!r} like its "
            "source, so the two would not sync; give --any-name to clone anyway"
        )
    if not resuming:
        # Written before the log: a clone killed at any instant is resumed
        # by the same command, not refused as a log that exists.
        markClone(options.newlog, options.source)
    else:
        # Killed mid-write, the clone may have left part of a line: no one
        # else has used the new log, so it goes rather than stay as a
        # damaged line that every reader would report.
        Log(options.newlog).cutUnfinishedLine()
    options.resuming = resuming
    options.log = options.newlog
    options.peer = options.source
    options.once = True
    options.create = True


def _startPeer(options):
    """
    Start the peer command of a sync (not a URL's), so that it starts up
    while this process imports Twisted; see L{gossip.transport.spawn}.
    """
    from gossip.transport.spawn import SpawnError, spawnPeer
    from gossip.transport.urls import isURL

    options.spawned = None
    if options.peer is not None and isURL(options.peer):
        return
    if not options.create and not os.path.lexists(options.log):
        # The sync will say so; the command need not start.
        return
    try:
        options.spawned = spawnPeer(options.peer, options.peerCommand, options.any_name)
    except SpawnError as e:
        raise LogError(str(e)) from None


_OUTPUT_FORMATS = ("text", "json", "raw")

# The commands that scripts run in loops, parsed by _quickOptions: for
# each, what runs it, its flags and its options that take a value (by
# attribute), the attributes of its two positional arguments, whether the
# second is repeated ("*") or optional ("?"), and the options' defaults.
_QUICK = {
    "say": (
        _say,
        {"--fsync": "fsync", "-v": "verbose", "--verbose": "verbose"},
        {"--file": "file"},
        ("log", "pairs", "*"),
        lambda: {"fsync": False, "verbose": False, "file": []},
    ),
    "ask": (
        _ask,
        {"-f": "follow", "--follow": "follow"},
        {"--format": "format", "--last": "last"},
        ("log", "terms", "*"),
        lambda: {"follow": False, "format": "text", "last": None},
    ),
    "chat": (_chat, {}, {}, ("log", "nick", "?"), dict),
}


class _Options:
    """
    Parsed arguments as attributes, like argparse's namespace.
    """

    def __init__(self, **values):
        self.__dict__.update(values)


def _quickValue(values, name, text):
    """
    Set the option C{name} given the value C{text}, as L{_parser} does.

    @return: whether C{text} is a valid value.
    """
    if name == "file":
        values[name].append(text)
    elif name == "format" and text in _OUTPUT_FORMATS:
        values[name] = text
    elif name == "last":
        try:
            values[name] = int(text)
        except ValueError:
            return False
    else:
        return False
    return True


def _quickOptions(argv):
    """
    Parse the arguments of C{say}, C{ask} or C{chat} exactly as L{_parser}
    would, without importing argparse.

    Only the plain forms are parsed here: options named in full, and values
    that do not start with C{-}.  For anything else (help, a mistake, an
    abbreviated option, C{--}) this returns L{None}, and L{_parser} parses
    and reports as it always has.
    """
    if not argv or argv[0] not in _QUICK:
        return None
    run, flags, valued, (first, rest, nargs), defaults = _QUICK[argv[0]]
    values = defaults()
    positional = []
    arguments = iter(argv[1:])
    for argument in arguments:
        if not argument.startswith("-"):
            positional.append(argument)
            continue
        option, equals, text = argument.partition("=")
        if option in flags and not equals:
            values[flags[option]] = True
        elif option in valued:
            if not equals:
                text = next(arguments, "-")
                if text.startswith("-"):
                    return None
            if not _quickValue(values, valued[option], text):
                return None
        else:
            return None
    if not positional:
        return None
    values[first], *others = positional
    if nargs == "?":
        if len(others) > 1:
            return None
        others = others[0] if others else None
    values[rest] = others
    return _Options(command=argv[0], run=run, **values)


def main(argv=None):
    """
    Run the C{gossip} command; return its exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        options = _quickOptions(argv)
        if options is None:
            argv, peerCommand = _splitPeerCommand(argv)
            options = _parser().parse_args(argv)
            if peerCommand is not None:
                options.peerCommand = peerCommand
        if getattr(options, "last", None) is not None and options.last < 0:
            raise UsageError("ask: --last takes a number of adds, 0 or more")
        return options.run(options)
    except (UsageError, LogError) as e:
        sys.stderr.write(f"gossip: {e}\n")
        return 2 if isinstance(e, UsageError) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (gossip ask ... | head): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def run():
    """
    The entry point of the C{gossip} script (bin/gossip) and of C{python -m gossip}.
    """
    sys.exit(main())
