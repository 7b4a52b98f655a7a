# -*- test-case-name: tests.test_documents -*-
"""
C{gossip folder} and C{gossip doc}: a folder kept in step with a log, and
a log's documents looked at from the command line.
"""

import json
import os
import sys
import time
from datetime import datetime
from difflib import SequenceMatcher

from gossip.store.logfile import Log, LogError

__all__ = ["doc", "folder", "parseTime"]


def parseTime(text):
    """
    A time given on the command line: seconds since the epoch, or an ISO
    8601 date and time (local time unless it says otherwise).

    @raise ValueError: it is neither; the message is fit to show.
    """
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give seconds since 1970 or YYYY-MM-DD[THH:MM[:SS]]"
        ) from None


def _report(message):
    sys.stderr.write(f"gossip: {message}\n")


def folder(options):
    """
    C{gossip folder LOG DIR [--once]}.
    """
    from gossip.documents.folder import Folder, FolderError

    if options.once:
        folder = Folder(options.log, options.dir, report=_report)
        try:
            folder.open()
            try:
                folder.sync()
            finally:
                folder.close()
        except FolderError as e:
            raise LogError(f"folder: {e}") from None
        return 0
    return _watch(options)


def _watch(options):
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from gossip.documents.folder import Folder, FolderError
    from gossip.documents.service import FolderService

    service = FolderService(
        Folder(options.log, options.dir, settle=0.5), reactor, useInotify=not options.poll
    )
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    try:
        service.startService()
    except FolderError as e:
        raise LogError(f"folder: {e}") from None
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


def _collection(path):
    """
    The documents of the log at C{path}, from the folder state's cache if
    one describes it, and the log.
    """
    from gossip.documents.collection import Collection

    log = Log(path)
    f = log.open()
    collection = None
    directory, name = os.path.split(log.path)
    try:
        with open(os.path.join(directory, b"." + name + b".gossip-folder"), "rb") as state:
            collection = Collection.load(json.loads(state.read())["collection"], f, _report)
    except (OSError, ValueError, KeyError, TypeError):
        collection = None
    if collection is None:
        collection = Collection(_report)
    collection.read(f)
    return f, collection


def _when(stamp):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _document(collection, path):
    document = collection.documents.get(path)
    if document is None:
        raise LogError(f"doc: no document {path!r} in this log")
    return document


def doc(options):
    """
    C{gossip doc list|show|history LOG ...}.
    """
    from gossip.documents.collection import readBlob

    out = sys.stdout
    if options.action == "list":
        f, collection = _collection(options.log)
        if collection.damaged and not collection.intact:
            f.close()
            # As gossip ask says it.
            raise LogError(
                f"{os.fsdecode(options.log)}: not a gossip log: "
                f"{collection.damaged} lines, not one intact add"
            )
        with f:
            for path, document in sorted(collection.documents.items()):
                if document.live:
                    size = (
                        document.winner().size if document.kind == "blob"
                        else len(document.text.encode("utf-8", "surrogatepass"))
                    )
                else:
                    size = "deleted"
                by = document.last[1].decode("utf-8", "backslashreplace")
                out.write(f"{path}\t{size}\t{_when(document.last[0])}\t{by}\n")
        return 0
    if options.action == "show":
        if options.at is None:
            f, collection = _collection(options.log)
        else:
            from gossip.documents.collection import Collection

            f = Log(options.log).open()
            collection = Collection(_report)
            collection.read(f, until=options.at)
        with f:
            document = _document(collection, options.path)
            if not document.live:
                raise LogError(f"doc: {options.path!r} was deleted")
            if document.kind == "blob":
                data = readBlob(f, document.winner().offset)
            else:
                data = document.text.encode("utf-8", "surrogatepass")
        out.flush()
        sys.stdout.buffer.write(data)
        return 0
    return _history(options)


def _history(options):
    from gossip.documents.collection import Collection
    from gossip.documents.model import BLOB, DELETED, FROM, TO

    out = sys.stdout
    collection = Collection(_report)
    texts = {}
    rows = []

    def keep(offset, pairs, key, document):
        if document.path != options.path:
            return
        names = {name for name, value in pairs}
        before = texts.get(document.path, "")
        after = texts[document.path] = document.text
        if DELETED in names:
            change = "deleted"
        elif BLOB in names:
            change = f"whole file, {dict(pairs)[BLOB].__len__()} bytes"
        else:
            added = removed = 0
            matcher = SequenceMatcher(None, before.splitlines(), after.splitlines(), autojunk=False)
            for tag, i1, i2, j1, j2 in matcher.get_opcodes():
                removed += i2 - i1 if tag != "equal" else 0
                added += j2 - j1 if tag != "equal" else 0
            change = f"+{added} -{removed}"
        values = dict(pairs)
        if FROM in values:
            change += f", from {values[FROM].decode('utf-8', 'backslashreplace')}"
        if TO in values:
            change += f", renamed to {values[TO].decode('utf-8', 'backslashreplace')}"
        stamp = float(dict(pairs).get(b"time", b"0") or 0)
        rows.append(f"{_when(stamp)}\t{key[0].decode('utf-8', 'backslashreplace')}\t{change}\n")

    with Log(options.log).open() as f:
        collection.read(f, keep=keep)
    _document(collection, options.path)
    out.writelines(rows)
    return 0
