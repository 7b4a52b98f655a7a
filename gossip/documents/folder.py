# -*- test-case-name: tests.test_documents -*-
"""
A folder kept in step with a log's documents, both ways, one pass at a
time: files saved since the last pass become adds, and documents changed
by adds become files.

The log is the truth.  Beside it, C{.LOG.gossip-folder} keeps what this
folder's files held when gossip last wrote or read them (size, times,
inode, hash, and the document's state then) and each document's merged
state as of an offset in the log: only an optimisation and a memory of
what the files were, safe to delete.

A person's save is never overwritten: a file is written only through a
temporary file renamed over it, and only if it is still what gossip last
wrote or read; a file that changed is read first, and its change made on
the state the person had, as an edit concurrent with whatever came since.
The state is saved, with what a pass is about to write, before the pass
writes a file, so that a pass killed at any instant is taken up where it
stopped: each change a file makes is derived from the file's bytes and the
state it was made on alone, so making it again after a crash makes the same
CRDT update, which merges as one.
"""

import json
import os
import stat
import time
from base64 import b64decode, b64encode
from hashlib import sha256

from gossip.documents.collection import Collection, readBlob
from gossip.documents.ignore import IGNOREFILE, Ignore
from gossip.documents.model import _NOTHING, BadAdd, Document
from gossip.store.logfile import Log, LogError

__all__ = ["Folder", "FolderError", "LIMIT"]

# Files larger than this are carried whole, like files that are not UTF-8.
LIMIT = 8 << 20
_MAGIC = "gossip-folder 1"


class FolderError(Exception):
    """
    The folder or its log cannot be used; the message is one line.
    """


class _Record:
    """
    What one file held when gossip last wrote or read it.

    @ivar stat: C{(size, mtime_ns, ctime_ns, inode)} then.
    @ivar digest: the SHA-256 of its bytes then (hex).
    @ivar base: the document's CRDT state (an update) that those bytes
        are, or L{None} while that is the document's state now.
    @ivar changes: the document's L{Document.changes} then.
    @ivar heads: the whole-file versions the file held or was shown.
    @ivar pending: the digest a pass was about to write, if it was.
    @ivar copy: whether gossip wrote it as a conflict copy.
    @ivar missing: since when (monotonic) the file has been missing.
    """

    __slots__ = ("stat", "digest", "base", "changes", "heads", "pending", "copy", "missing")

    def __init__(self, stat=None, digest=None, base=None, changes=0, heads=(), pending=None,
                 copy=False):
        self.stat = stat
        self.digest = digest
        self.base = base
        self.changes = changes
        self.heads = list(heads)
        self.pending = pending
        self.copy = copy
        self.missing = None

    def dump(self):
        return {
            "stat": self.stat,
            "digest": self.digest,
            "base": None if self.base is None else b64encode(self.base).decode("ascii"),
            "changes": self.changes,
            "heads": [[by.decode("latin-1"), at] for by, at in self.heads],
            "pending": self.pending,
            "copy": self.copy,
        }

    @classmethod
    def load(cls, item):
        return cls(
            stat=tuple(item["stat"]) if item["stat"] else None,
            digest=item["digest"],
            base=None if item["base"] is None else b64decode(item["base"]),
            changes=item["changes"],
            heads=[(by.encode("latin-1"), at) for by, at in item["heads"]],
            pending=item["pending"],
            copy=item["copy"],
        )


def _statOf(st):
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _digest(data):
    return sha256(data).hexdigest()


class Folder:
    """
    A folder and the log it is kept in step with.

    @ivar log: the L{Log}.
    @ivar root: the folder's path.
    @ivar report: called with a one-line message for each problem (an add
        skipped, a file that cannot be written).
    @ivar settle: how long (seconds) a file must be missing before a pass
        takes it as deleted: 0 for a single pass, more while watching, so
        that a file an editor moves aside for a moment while it saves is not
        taken as deleted.  (A save caught half-written is taken as a change,
        and the rest of it as another a moment later.)
    @ivar limit: files larger than this are carried whole.
    """

    def __init__(self, log, root, report=lambda message: None, settle=0.0, limit=LIMIT,
                 clock=time.monotonic):
        self.log = log if isinstance(log, Log) else Log(log)
        self.root = os.path.abspath(root)
        self.report = report
        self.settle = settle
        self.limit = limit
        self.clock = clock
        directory, name = os.path.split(self.log.path)
        self.statePath = os.path.join(directory, b"." + name + b".gossip-folder")
        self.problems = 0
        self._records = {}
        self._copies = set()
        self._collection = None
        self._file = None
        self._reported = set()
        self._ownPaths = set()
        self._ownNames = (set(), ("",))
        self._ignore = Ignore()
        self._dirty = False

    # Starting and stopping

    def open(self):
        """
        Check the folder, open the log (creating it) and load the state.

        @raise FolderError: the folder is missing or not writable, or the
            log cannot be read.
        """
        if not os.path.isdir(self.root):
            raise FolderError(f"{self.root}: not a directory")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise FolderError(f"{self.root}: not writable")
        try:
            self.log.state(create=True)
            self._file = self.log.open()
        except LogError as e:
            raise FolderError(str(e)) from None
        logPath = os.path.realpath(os.fsdecode(self.log.path))
        base = os.path.basename(logPath)
        self._ownPaths = {logPath, os.fsdecode(self.statePath)}
        self._ownPrefix = (os.path.dirname(logPath), "." + base + ".gossip-")
        given = os.path.basename(os.fsdecode(self.log.path))
        self._ownNames = (
            {base, given},
            tuple({"." + base + ".gossip-", "." + given + ".gossip-"}),
        )
        self._load()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def _load(self):
        data = {}
        try:
            with open(self.statePath, "rb") as f:
                data = json.loads(f.read())
            if data.get("magic") != _MAGIC or data.get("folder") != os.path.realpath(self.root):
                data = {}
        except (OSError, ValueError):
            data = {}
        try:
            self._collection = Collection.load(data.get("collection", {}), self._file, self._skip)
        except (KeyError, TypeError, ValueError, BadAdd):
            self._collection = Collection(self._skip)
        # Whether the documents are those the records were saved with.
        cached = self._collection.offset > 0
        self._records = {}
        for path, item in data.get("files", {}).items():
            try:
                record = _Record.load(item)
            except (KeyError, TypeError, ValueError):
                continue
            document = self._collection.documents.get(path)
            if record.pending is not None:
                # A pass was about to write this: if it did, the file holds
                # the state the cache was saved with.
                if cached and self._fileDigest(path) == record.pending:
                    record.digest = record.pending
                    record.base = None
                    record.stat = self._stat(path)
                record.pending = None
            if record.digest is None:
                # A file a pass was about to write for the first time, and
                # did not.
                continue
            if not cached:
                # What the file was is unknown: the log is the truth.
                record.base = None
                record.changes = -1
            elif record.base is None:
                record.changes = document.changes if document is not None else 0
            self._records[path] = record
        self._copies = set(data.get("copies", []))
        self._collection.before = self._keepBase

    def _stat(self, path):
        try:
            return _statOf(os.lstat(self._full(path)))
        except OSError:
            return None

    def _fileDigest(self, path):
        try:
            with open(self._full(path), "rb") as f:
                return _digest(f.read())
        except OSError:
            return None

    def _keepBase(self, document):
        """
        A document is about to change: its file's record keeps the state
        the file holds.
        """
        record = self._records.get(document.path)
        if record is not None and record.base is None and record.changes == document.changes:
            record.base = document.update()

    def saveState(self):
        """
        Write the state file, atomically.
        """
        data = {
            "magic": _MAGIC,
            "folder": os.path.realpath(self.root),
            "files": {path: record.dump() for path, record in self._records.items()},
            "copies": sorted(self._copies),
        }
        text = json.dumps(data, separators=(",", ":"))
        text = text[:-1] + ',"collection":' + self._collection.dump() + "}"
        temporary = self.statePath + b".tmp%d" % (os.getpid(),)
        try:
            with open(temporary, "wb") as f:
                f.write(text.encode("ascii"))
            os.replace(temporary, self.statePath)
        except OSError as e:
            self._problem(("state", str(e)), f"cannot save {os.fsdecode(self.statePath)}: {e.strerror}")

    # Problems

    def _skip(self, message):
        self.problems += 1
        self.report(message)

    def _problem(self, key, message):
        """
        Report a problem once, however many passes meet it.
        """
        self.problems += 1
        if key not in self._reported:
            self._reported.add(key)
            self.report(message)

    # A pass

    @property
    def documents(self):
        return self._collection.documents

    def sync(self):
        """
        One pass: take in new adds, turn files changed since the last pass
        into adds, and write the files of documents that changed.

        @return: whether anything is left for a later pass (a file not yet
            settled).
        @raise FolderError: the folder or the log cannot be read.
        """
        if not os.path.isdir(self.root):
            raise FolderError(f"{self.root}: not a directory")
        self._readLog()
        self._fold()
        unsettled = self._scan()
        self._readLog()
        self._fold()
        wrote = self._write()
        if wrote or self._dirty:
            self.saveState()
            self._dirty = False
        return unsettled

    def _readLog(self):
        changed = self._collection.read(self._file)
        if changed:
            self._dirty = True

    def _full(self, path):
        return os.path.join(self.root, *path.split("/"))

    # Files -> adds

    def _walk(self):
        """
        The documents' files in the folder, as C{path -> lstat}, and the
        directories that could not be read.
        """
        ignore = Ignore.fromFile(os.path.join(self.root, IGNOREFILE))
        self._ignore = ignore
        found = {}
        unreadable = []
        stack = [""]
        while stack:
            relative = stack.pop()
            directory = self._full(relative) if relative else self.root
            try:
                names = os.listdir(directory)
            except OSError as e:
                if relative:
                    unreadable.append(relative + "/")
                    continue
                raise FolderError(f"{self.root}: {e.strerror}") from None
            for name in names:
                path = f"{relative}/{name}" if relative else name
                full = os.path.join(directory, name)
                try:
                    st = os.lstat(full)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if not ignore.ignored(path, isDirectory=True):
                        stack.append(path)
                elif stat.S_ISREG(st.st_mode):
                    if name.endswith(".tmp%d" % os.getpid()) or self._isOwn(full):
                        continue
                    if ignore.ignored(path):
                        if ".gossip-tmp-" in name and name.startswith("."):
                            # A write this process or an earlier one left.
                            _unlink(full)
                        continue
                    found[path] = st
        return found, unreadable

    def _isOwn(self, full):
        # The log's own files are named after it (a symbolic link is not
        # followed, so the name in the folder is the file's own name).
        name = os.path.basename(full)
        names, prefixes = self._ownNames
        if name not in names and not name.startswith(prefixes):
            return False
        real = os.path.realpath(full)
        if real in self._ownPaths:
            return True
        directory, prefix = self._ownPrefix
        return os.path.dirname(real) == directory and os.path.basename(real).startswith(prefix)

    def _scan(self):
        """
        Turn the files changed since the last pass into adds.

        @return: whether a change was left for a later pass.
        """
        found, unreadable = self._walk()
        now = self.clock()
        unsettled = False
        # Files new here, by digest: one with the bytes of a file gone in
        # the same pass is that file renamed.
        new = {}
        for path, st in sorted(found.items()):
            record = self._records.get(path)
            if record is not None:
                record.missing = None
                if record.stat == _statOf(st):
                    continue
            try:
                with open(self._full(path), "rb") as f:
                    data = f.read()
                    st = os.fstat(f.fileno())
            except OSError as e:
                self._problem(("read", path), f"cannot read {path}: {e.strerror}")
                continue
            digest = _digest(data)
            if record is not None and digest == record.digest:
                record.stat = _statOf(st)
                continue
            if record is None and path not in self.documents and data and _isText(data, self.limit):
                new.setdefault(digest, []).append((path, data, _statOf(st)))
                continue
            self._saved(path, data, digest, _statOf(st), record)
        # The digests of files gone but not yet settled, which may be
        # renames under way.
        waiting = set()
        for path, record in list(self._records.items()):
            if path in found or any(path.startswith(d) for d in unreadable):
                continue
            if record.digest is None:
                del self._records[path]
                continue
            if self._ignore.ignoredAnywhere(path):
                continue
            if record.missing is None and self.settle:
                record.missing = now
                unsettled = True
                waiting.add(record.digest)
                continue
            if record.missing is not None and now - record.missing < self.settle:
                unsettled = True
                waiting.add(record.digest)
                continue
            if new.get(record.digest) and self._renamed(path, record, *new[record.digest][0]):
                new[record.digest].pop(0)
                continue
            self._removed(path, record)
        for digest, files in new.items():
            for path, data, statNow in files:
                if digest in waiting:
                    unsettled = True
                    continue
                self._saved(path, data, digest, statNow, None)
        return unsettled

    def _say(self, pairs):
        try:
            self.log.say(pairs)
        except LogError as e:
            raise FolderError(str(e)) from None
        self._dirty = True

    def _saved(self, path, data, digest, statNow, record):
        """
        A file was saved (or created): make its change an add.
        """
        document = self.documents.get(path)
        if record is not None and record.copy:
            # A conflict copy a person changed: a document of its own now.
            record = None
        if document is None:
            document = Document(path)
        elif record is None and document.live and self._content(document) == data:
            # The document's file, written before the state was saved (or
            # with the state deleted): nothing changed.
            self._records[path] = _Record(
                stat=statNow, digest=digest, changes=document.changes,
                heads=[v.key for v in document.heads()],
            )
            return
        text = None
        if len(data) <= self.limit:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                pass
        if text is not None:
            if record is None:
                # New here.  Where the document holds a file this node
                # has not written yet, the two were made concurrently:
                # the change is made on the empty document, so that both
                # texts survive, and the same text made on two nodes
                # merges into one.
                base = _EMPTY if document.live else None
            else:
                base = record.base if record.changes != document.changes else None
            # A save on an older state supersedes only the versions (blobs,
            # deletes, renames) its writer had seen.
            seen = record.heads if record is not None and base is not None else None
            pairs = document.saveText(text, base=base, heads=seen)
        else:
            heads = record.heads if record is not None else (
                [] if document.live else [v.key for v in document.heads()]
            )
            pairs = document.saveBlob(data, heads)
        # The document reads its own add back: no state need be kept for
        # the file meanwhile.
        self._records.pop(path, None)
        self._say(pairs)
        self._collection.read(self._file)
        current = self._content(document) if document.live else None
        self._records[path] = _Record(
            stat=statNow, digest=digest,
            base=None if current == data else document.made,
            changes=document.changes if current == data else -1,
            heads=[v.key for v in document.heads()],
        )

    def _renamed(self, old, record, path, data, statNow):
        """
        A file gone and a file new in one pass with the same bytes: make
        that a rename, the new document continuing the old one's CRDT text
        (see L{Document.renamedFrom}).

        @return: whether it was made a rename (a text document, live, and
            the file what gossip last wrote or read).
        """
        source = self.documents.get(old)
        if record.copy or source is None or not source.live or source.kind != "text":
            return False
        base = record.base if record.changes != source.changes else None
        state = base if base is not None else source.update()
        if Document(path, state).text.encode("utf-8", "surrogatepass") != data:
            return False
        del self._records[old]
        self._say(Document(path).renamedFrom(old, state, data.decode("utf-8")))
        self._collection.read(self._file)
        self._say(source.delete(base=base, heads=record.heads, to=[path]))
        self._collection.read(self._file)
        document = self.documents[path]
        self._records[path] = _Record(
            stat=statNow, digest=record.digest, changes=document.changes,
            heads=[v.key for v in document.heads()],
        )
        return True

    def _fold(self):
        """
        Fold into a renamed file's new document the edits made to its old
        name by someone who had not seen the rename (those that keep the
        old name's document live), and delete the old name again.
        """
        # In the order of the paths, the same on every node, whatever order
        # their logs hold the adds in.
        for path in sorted(self.documents):
            document = self.documents[path]
            if not document.live or document.kind != "text":
                continue
            # Only into a file that exists: renames that cross (a to b on
            # one node, b to a on another) fold one into the other once,
            # not each into the other and both away; and an edit to the
            # old name outlives a new name deleted since, as any edit
            # outlives a delete it did not see.
            targets = [
                target
                for target in document.renames()
                if target in self.documents and self.documents[target].live
            ]
            if not targets:
                # Not renamed, the new name's adds not here yet, or it is gone.
                continue
            for target in targets:
                pairs = self.documents[target].fold(document)
                if pairs is not None:
                    self._say(pairs)
                    self._collection.read(self._file)
            self._say(document.delete(heads=[v.key for v in document.heads()], to=targets))
            self._collection.read(self._file)

    def _removed(self, path, record):
        """
        A file was deleted: make that an add, unless it was a conflict copy.
        """
        del self._records[path]
        if record.copy:
            return
        document = self.documents.get(path)
        if document is None or not document.live:
            return
        base = record.base if record.changes != document.changes else None
        self._say(document.delete(base=base, heads=record.heads))
        self._collection.read(self._file)

    # Adds -> files

    def _targets(self):
        """
        What each file should hold: C{path -> (kind, document)}, kind
        C{"doc"} or C{"copy"} with a version.
        """
        targets = {}
        for path, document in self.documents.items():
            if document.live:
                targets[path] = ("doc", document, None)
            for copyPath, version in document.conflicts():
                if copyPath not in self._copies and copyPath not in self.documents:
                    targets.setdefault(copyPath, ("copy", document, version))
        return targets

    def _content(self, document, version=None):
        """
        The bytes a document's file holds, or (given a blob version) its
        conflict copy.
        """
        if version is not None:
            return readBlob(self._file, version.offset)
        if document.kind == "blob":
            return readBlob(self._file, document.winner().offset)
        return document.text.encode("utf-8", "surrogatepass")

    def _write(self):
        """
        Bring the files up to the documents.

        @return: whether any file was written or removed.
        """
        plan = []
        targets = self._targets()
        for path, (kind, document, version) in targets.items():
            record = self._records.get(path)
            if kind == "doc" and record is not None and record.changes == document.changes:
                continue
            if self._ignore.ignoredAnywhere(path) or (record is not None and record.missing):
                continue
            try:
                data = self._content(document, version)
            except (OSError, BadAdd) as e:
                self._problem(("content", path), f"cannot read {path} from the log: {e}")
                continue
            digest = _digest(data)
            if record is not None and record.digest == digest:
                record.changes = document.changes
                record.base = None
                record.heads = [v.key for v in document.heads()]
                continue
            plan.append((path, kind, document, data, digest))
        removals = [
            path for path, record in self._records.items()
            if path not in targets and not record.copy and path in self.documents
            and not self.documents[path].live
        ]
        if not plan and not removals:
            return False
        for path, kind, document, data, digest in plan:
            record = self._records.get(path)
            if record is None:
                record = self._records[path] = _Record(copy=kind == "copy")
            record.pending = digest
        self.saveState()
        for path, kind, document, data, digest in plan:
            self._writeFile(path, kind, document, data, digest)
        for path in removals:
            self._removeFile(path)
        return True

    def _safeDirectory(self, path):
        """
        Make the directories C{path} is in, refusing to go through a
        symbolic link or a file.

        @return: a reason it cannot be written, or L{None}.
        """
        parts = path.split("/")[:-1]
        directory = self.root
        for part in parts:
            directory = os.path.join(directory, part)
            try:
                st = os.lstat(directory)
            except FileNotFoundError:
                try:
                    os.mkdir(directory)
                except OSError as e:
                    return f"cannot make {os.path.relpath(directory, self.root)}/: {e.strerror}"
                continue
            except OSError as e:
                return e.strerror
            if stat.S_ISLNK(st.st_mode):
                return f"{os.path.relpath(directory, self.root)} is a symbolic link"
            if not stat.S_ISDIR(st.st_mode):
                return f"{os.path.relpath(directory, self.root)} is a file, not a folder"
        return None

    def _writeFile(self, path, kind, document, data, digest):
        record = self._records.get(path)
        if record is not None and record.digest is None:
            # Written for the first time: nothing to check it against.
            del self._records[path]
            record = None
        elif record is not None:
            record.pending = None
        why = self._safeDirectory(path)
        full = self._full(path)
        mode = 0o666 & ~_umask()
        if why is None:
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                st = None
            except OSError as e:
                why = e.strerror
            else:
                if stat.S_ISDIR(st.st_mode):
                    why = "it is a folder here"
                elif not stat.S_ISREG(st.st_mode):
                    why = "it is not a regular file here"
                elif record is None or record.stat != _statOf(st) or record.copy:
                    # Changed since it was last read (or never read): the
                    # next pass takes that change in first.
                    return
                else:
                    mode = stat.S_IMODE(st.st_mode)
        if why is not None:
            self._problem(("write", path, why), f"cannot write {path}: {why}")
            return
        directory, name = os.path.split(full)
        temporary = os.path.join(directory, f".{name}.gossip-tmp-{os.urandom(4).hex()}")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.fchmod(fd, mode)
                _writeAll(fd, data)
                st = os.fstat(fd)
            finally:
                os.close(fd)
            os.rename(temporary, full)
        except OSError as e:
            _unlink(temporary)
            self._problem(("write", path, e.strerror), f"cannot write {path}: {e.strerror}")
            return
        if kind == "copy":
            self._copies.add(path)
            self._records[path] = _Record(stat=_statOf(st), digest=digest, copy=True)
            return
        self._records[path] = _Record(
            stat=_statOf(st), digest=digest, base=None, changes=document.changes,
            heads=[v.key for v in document.heads()],
        )

    def _removeFile(self, path):
        record = self._records[path]
        full = self._full(path)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            del self._records[path]
            return
        except OSError:
            return
        if record.stat != _statOf(st):
            # Changed since gossip last read it: the next pass takes the
            # change in, which brings the file back.
            return
        try:
            os.unlink(full)
        except OSError as e:
            self._problem(("remove", path), f"cannot remove {path}: {e.strerror}")
            return
        del self._records[path]


# The state of a document that holds nothing, on which a file new here is
# made when the document already holds another.
_EMPTY = _NOTHING


def _isText(data, limit):
    if len(data) > limit:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _writeAll(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
