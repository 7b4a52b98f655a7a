# -*- test-case-name: tests.test_commands -*-
"""
The reactor's commands: C{gossip serve}, C{gossip sync} and C{gossip clone}.

L{gossip.cli.main} imports this module only when one of them runs, so that the
other commands never pay for importing Twisted.
"""

import os
import shlex
import signal
import sys
import time

from twisted.internet.error import ConnectError
from twisted.internet.stdio import StandardIO
from twisted.internet.task import react
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    PredicateResult,
    formatEvent,
    globalLogBeginner,
)

from gossip import counted
from gossip.store.logfile import Log, LogError
from gossip.transport.errors import CommandError
from gossip.cli.cloning import cloneMarker
from gossip.cli.options import sessionSettings
from gossip.sync.factories import SyncFactory
from gossip.sync.protocol import vouchFor
from gossip.sync.service import LogService
from gossip.transport.command import SpawnedEndpoint, widenPipe
from gossip.transport.reach import Reach, urlEndpoint
from gossip.transport.spawn import SpawnError, spawnPeer
from gossip.transport.urls import isURL

__all__ = ["clone", "serve", "sync"]


def _startLogging(verbose, quietSessions=False, interrupted=()):
    """
    Log to standard error, one line an event: errors and warnings always,
    progress with C{--verbose}.

    @param interrupted: once this holds anything, log nothing more.
    @param quietSessions: leave out, unless verbose, the sessions' own
        errors and warnings: C{gossip serve}'s peer reports why a session
        failed itself, and gets this standard error too.
    """

    def write(event):
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None and not text:
            text = failure.getErrorMessage()
        sys.stderr.write(f"gossip: {text}\n")
        sys.stderr.flush()

    def wanted(event):
        if interrupted:
            # Ctrl-C ends sessions as a peer's failure would: not news.
            return PredicateResult.no
        level = event.get("log_level", LogLevel.info)
        namespace = event.get("log_namespace", "")
        if verbose and namespace.startswith("gossip"):
            return PredicateResult.yes
        if level < LogLevel.warn:
            return PredicateResult.no
        if quietSessions and namespace.startswith("gossip.sync.protocol") and "log_failure" not in event:
            return PredicateResult.no
        return PredicateResult.yes

    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(write, [wanted])], redirectStandardIO=False
    )


def _run(main, options, quietSessions=False, finish=None):
    """
    Run C{main(reactor, options)} under the reactor, call C{finish} (if
    given) with C{main}'s exit status, and exit the process with it.
    """
    status = []
    interrupted = options.interrupted = []
    _startLogging(options.verbose, quietSessions, interrupted)

    def interrupt(signum, frame):
        # Ctrl-C or a SIGTERM: the user's doing, so no one is to blame;
        # what was received is in the log.
        if not interrupted:
            interrupted.append(signum)
            reactor.callFromThread(reactor.stop)

    def handle():
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, interrupt)

    async def wrapped(reactor):
        handle()
        # The reactor installs its own SIGTERM handler after this starts.
        reactor.callLater(0, handle)
        try:
            status.append(await main(reactor, options))
        except (LogError, CommandError) as e:
            sys.stderr.write(f"gossip: {e}\n")
            status.append(1)

    from twisted.internet import reactor

    try:
        react(wrapped)
    except SystemExit as e:
        if e.code not in (0, None):
            status[:] = [e.code]
    if interrupted:
        [signum] = interrupted
        if not quietSessions:
            # (A serve's peer, interrupted with it, says so for both.)
            said = "interrupted" if signum == signal.SIGINT else "terminated"
            sys.stderr.write(f"gossip: {said}\n")
        status[:] = [128 + signum]
    if finish is not None:
        finish(status[0] if status else 1)
    # The log and its cache are written: leave now rather than spend a
    # quarter of a second tearing down the interpreter's modules.
    sys.stdout.flush()
    sys.stderr.flush()
    code = status[0] if status else 1
    if sys.getprofile() is not None:
        # Under a profiler, which writes its figures at the normal exit.
        sys.exit(code)
    os._exit(code)


async def _session(reactor, service, endpoint, factory):
    """
    Connect C{factory}'s session over C{endpoint}; wait for it to end.

    @return: the ended session.
    """
    service.startService()
    try:
        try:
            protocol = await endpoint.connect(factory)
        except ConnectError as e:
            raise CommandError(f"{factory.peer}: {e}")
        await protocol.whenFinished()
    finally:
        service.stopService()
    return protocol


def _service(reactor, options, create=True, shareClaims=False):
    log = Log(options.log)
    if not create:
        if not os.path.lexists(options.log):
            raise CommandError(f"{options.log}: no such log (--create makes a new one)")
        log.state()
    return LogService(log, reactor, rescanInterval=options.rescan, shareClaims=shareClaims)


async def _serve(reactor, options):
    # A mistyped LOG in a forced command or an ssh URL must not become a
    # new, empty log that the peer then syncs into.
    # A server (sshd's forced command, say) may run beside a daemon on
    # the same log: they share what they fetch.  A one-shot one does not:
    # its Synced must mean that the log holds what the peer listed.
    service = _service(
        reactor, options, create=options.create, shareClaims=not options.once
    )
    service.startService()
    factory = SyncFactory(service, "stdio peer", settings(options), once=options.once)
    if options.nodes is not None:
        factory.vouch = vouchFor(options.nodes, "this peer (serve --nodes)")
    protocol = factory.buildProtocol(None)
    for fd in (0, 1):
        widenPipe(fd)
    StandardIO(protocol, reactor=reactor)
    try:
        succeeded = await protocol.whenFinished()
    finally:
        service.stopService()
    return 0 if succeeded else 1


def serve(options):
    """
    C{gossip serve --stdio LOG}: speak the protocol on standard input and
    output.
    """
    return _run(_serve, options, quietSessions=True)


def settings(options):
    """
    The L{SessionSettings} that C{gossip serve}, C{sync} and C{clone}
    options describe.
    """
    return sessionSettings(lambda name: getattr(options, name.replace("-", "_")))


def reach(options):
    """
    The L{Reach} that C{gossip sync} and C{gossip clone} options describe.
    """
    files = None
    given = [options.tls_key, options.tls_cert, options.tls_ca]
    if any(given):
        if not all(given):
            raise CommandError("give all of --tls-key, --tls-cert and --tls-ca, or none")
        from gossip.transport.tls import TLSFiles

        files = TLSFiles(key=options.tls_key, cert=options.tls_cert, ca=options.tls_ca)
    return Reach(
        identities=options.identity or [],
        knownHosts=options.known_hosts,
        acceptNewHostKeys=options.accept_new_host_keys,
        tls=files,
    )


async def _sync(reactor, options):
    service = _service(reactor, options, create=options.create)
    want = None
    if options.peer is not None and isURL(options.peer):
        endpoint, want = urlEndpoint(reactor, options.peer, reach(options))
        name = options.peer
    else:
        # The command started before Twisted was imported (see gossip.transport.spawn),
        # unless LOG was missing then and has been made since.
        spawned = options.spawned
        if spawned is None:
            try:
                spawned = spawnPeer(options.peer, options.peerCommand, options.any_name)
            except SpawnError as e:
                raise CommandError(str(e)) from None
        endpoint = SpawnedEndpoint(reactor, spawned)
        name = options.peer or _shortCommand(spawned.argv)
        if options.verbose and name != shlex.join(spawned.argv):
            # Once in full; each line after names it short.
            sys.stderr.write(f"gossip: {name} is {shlex.join(spawned.argv)}\n")
    factory = SyncFactory(
        service,
        name,
        settings(options),
        once=options.once,
        progress=getattr(options, "progress", None),
        want=want,
        dialled=True,
    )
    protocol = await _session(reactor, service, endpoint, factory)
    if protocol.succeeded and not options.once and not options.interrupted:
        # A continuous sync has no end of its own: the peer went away.
        sys.stderr.write(
            f"gossip: {name}: the peer hung up ({counted(protocol.received, 'add')} received, "
            f"{protocol.sent} sent)\n"
        )
        return 1
    return 0 if protocol.succeeded else 1


def _shortCommand(argv):
    """
    A peer command as the lines about its session name it: its words, with
    each absolute path cut to its last part (an interpreter's, a log's), so
    that a long command is not repeated whole on every line.
    """
    return shlex.join(os.path.basename(word) if os.path.isabs(word) else word for word in argv)


def sync(options):
    """
    C{gossip sync LOG PEER} or C{gossip sync LOG -- COMMAND...}.
    """
    return _run(_sync, options)


class Progress:
    """
    Shows a clone's progress on a terminal: adds, bytes, rate and time left.
    """

    def __init__(self, stream, clock=time.monotonic):
        self._stream = stream
        self._clock = clock
        self._start = clock()
        self._shown = 0.0
        self._session = None

    def __call__(self, session, final=False):
        self._session = session
        now = self._clock()
        if not final and now - self._shown < 0.2:
            return
        self._shown = now
        elapsed = max(now - self._start, 1e-9)
        rate = session.received / elapsed
        total = session.expected
        left = max(total - session.received, 0)
        eta = f"{left / rate:.0f}s left" if rate and left else "done" if final else "..."
        self._stream.write(
            f"\r{session.received}/{total} adds, "
            f"{session.receivedBytes / 1e6:.1f} MB, {rate:.0f} adds/s, {eta}\x1b[K"
        )
        if final:
            self._stream.write("\n")
        self._stream.flush()

    def finish(self):
        """
        Show the final figures and end the line, if anything was shown.
        """
        if self._session is not None:
            self(self._session, final=True)


def clone(options):
    """
    C{gossip clone SOURCE NEWLOG}: a new log, synced once from SOURCE (the
    command line has checked the names and started any peer command).
    """
    progress = Progress(sys.stderr) if sys.stderr.isatty() else None
    options.progress = progress

    def finish(status):
        if progress is not None:
            progress.finish()
        log = Log(options.newlog)
        marker = cloneMarker(options.newlog)
        if status == 0:
            _remove(marker)
            return
        try:
            received = sum(len(held) for held in log.state().have.values())
        except LogError:
            received = 0
        if received == 0 and not options.resuming:
            # Nothing to go on from: leave nothing behind.
            for path in (log.path, log.cachePath, marker):
                _remove(path)
            return
        sys.stderr.write(
            f"gossip: clone: {options.newlog} holds the {counted(received, 'add')} received so far; "
            "the same command goes on from there\n"
        )

    return _run(_sync, options, finish=finish)


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
