# -*- test-case-name: tests.test_documents -*-
"""
A document: one file's history, made of the adds that name it, and what
that history makes of the file now.

A text document is a pycrdt C{Doc} holding a C{Text} (the file's text) and
a C{Map} (whether the file exists: see L{Document.live}); each saved
change is one add carrying the CRDT update the save made.  A file that is
not UTF-8, or is too large, is carried whole, one version per add, the
newest winning.  The names and values of these adds are specified in
docs/documents.md.
"""

import os
import time as _time
from hashlib import sha256

from pycrdt import Doc, Map, Text

from gossip.documents.textdiff import diff, utf8Edits

__all__ = [
    "AFTER",
    "BLOB",
    "FROM",
    "BadAdd",
    "DELETED",
    "DOC",
    "Document",
    "TIME",
    "TO",
    "UPDATE",
    "Version",
    "checkPath",
    "conflictName",
    "documentOf",
    "newTime",
]

DOC = b"doc"
UPDATE = b"update"
TIME = b"time"
DELETED = b"deleted"
BLOB = b"blob"
AFTER = b"after"
# A rename: the new name's first add says where it came FROM, and the old
# name's delete where it went TO.
FROM = b"from"
TO = b"to"

# An update that changes nothing.
_NOTHING = b"\x00\x00"

# pycrdt client ids are below 2**53 (JavaScript's safe integers).
_CLIENTS = 1 << 53


class BadAdd(ValueError):
    """
    An add that names a document but cannot be part of it; the message is
    one line, fit to show.
    """


def newTime():
    """
    The wall-clock time a change is stamped with, as its add writes it.
    """
    return b"%.6f" % (_time.time(),)


def checkPath(value):
    """
    A document's path, checked.

    @param value: the bytes of a C{doc} value.
    @return: the path, a L{str} of C{/}-separated names.
    @raise BadAdd: it is not UTF-8, is empty or absolute, or has an empty,
        C{.} or C{..} name in it, or a NUL.
    """
    try:
        path = value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadAdd(f"document path {value!r} is not UTF-8") from None
    if not path or path.startswith("/") or "\0" in path:
        raise BadAdd(f"document path {path!r} is empty, absolute or holds a NUL")
    if any(name in ("", ".", "..") for name in path.split("/")):
        raise BadAdd(f"document path {path!r} has an empty, . or .. part")
    return path


def documentOf(pairs):
    """
    The path of the document an add belongs to, or L{None} if it names
    none.

    @raise BadAdd: the path is not one (see L{checkPath}).
    """
    for name, value in pairs:
        if name == DOC:
            return checkPath(value)
    return None


def conflictName(path, by, stamp):
    """
    The name of the conflict copy of C{path} that the version written by
    C{by} at C{stamp} (its C{time}) becomes: C{photo.jpg} ->
    C{photo.conflict-NODE-YYYYMMDD-HHMMSS.jpg}, the same on every machine.
    """
    directory, name = path.rpartition("/")[::2] if "/" in path else ("", path)
    stem, extension = os.path.splitext(name)
    node = by[:8].decode("ascii", "replace").replace("/", "_").replace("+", "-")
    when = _time.strftime("%Y%m%d-%H%M%S", _time.gmtime(stamp))
    copy = f"{stem}.conflict-{node}-{when}{extension}"
    return f"{directory}/{copy}" if directory else copy


def _key(text):
    """
    The C{(by, at)} that an C{after} value names (C{BY:AT}).
    """
    by, sep, at = text.rpartition(b":")
    if not sep or not by or not at.isdigit():
        raise BadAdd(f"after {text!r} is not BY:AT")
    return by, int(at)


class Version:
    """
    One add of a document that the version graph of its whole-file
    versions knows: a blob, or a delete.

    @ivar key: its C{(by, at)}.
    @ivar stamp: its C{time}, in seconds.
    @ivar offset: where its line starts in the log, to read a blob back.
    @ivar digest: the SHA-256 of the blob, L{None} for a delete.
    @ivar size: the blob's length.
    @ivar to: for a delete that renamed the file, the paths it went to.
    """

    __slots__ = ("key", "stamp", "offset", "digest", "size", "to")

    def __init__(self, key, stamp, offset, digest, size, to=()):
        self.key = key
        self.stamp = stamp
        self.offset = offset
        self.digest = digest
        self.size = size
        self.to = tuple(to)

    @property
    def order(self):
        """
        What the newest version is chosen by: time, then node, then at.
        """
        return (self.stamp, self.key[0], self.key[1])

    def dump(self):
        by, at = self.key
        return [by.decode("latin-1"), at, self.stamp, self.offset,
                self.digest.hex() if self.digest else None, self.size, list(self.to)]

    @classmethod
    def load(cls, item):
        by, at, stamp, offset, digest, size, *to = item
        return cls((by.encode("latin-1"), at), stamp, offset,
                   bytes.fromhex(digest) if digest else None, size, to[0] if to else ())


class Document:
    """
    What the adds naming one path make of it.

    @ivar path: the document's path.
    @ivar crdt: the pycrdt C{Doc} of its text.
    @ivar changes: how many adds have changed it (a version number for
        telling whether it changed since some moment).
    @ivar last: C{(time, by)} of its newest add.
    """

    def __init__(self, path, update=None):
        self.path = path
        self.crdt = Doc()
        self._text = self.crdt.get("text", type=Text)
        self._live = self.crdt.get("live", type=Map)
        if update is not None:
            self.crdt.apply_update(update)
        self.changes = 0
        self.last = (0.0, b"")
        self.saves = 0
        # The newest text save: (time, by, at).
        self._newestText = None
        self._versions = {}
        self._superseded = set()
        self._updates = None
        self._subscription = None
        # How many changes this node made that it has not yet absorbed.
        self._touched = 0
        # (version, kind, live), worked out once a version.
        self._facts = None
        # (version, update), encoded once a version.
        self._encoded = None
        # The state a change made on an older one left (see saveText).
        self.made = None

    # Reading adds

    def absorb(self, pairs, key, offset):
        """
        Take in one add naming this document.

        @param pairs: its (name, value) pairs.
        @param key: its C{(by, at)}.
        @param offset: where its line starts in the log.
        @raise BadAdd: it is malformed; nothing of it was taken in.
        """
        values = {}
        after = []
        to = []
        for name, value in pairs:
            if name == AFTER:
                after.append(_key(value))
            elif name == TO:
                to.append(checkPath(value))
            elif name in (UPDATE, TIME, DELETED, BLOB):
                values.setdefault(name, value)
        try:
            stamp = float(values.get(TIME, b"0"))
        except ValueError:
            raise BadAdd(f"{self.path}: time {values[TIME]!r} is not a number") from None
        if not 0 <= stamp < 1e11:
            raise BadAdd(f"{self.path}: time {values[TIME]!r} is out of range")
        update = values.get(UPDATE)
        if update is not None:
            try:
                self.crdt.apply_update(update)
            except Exception as e:
                # pycrdt raises ValueError for bytes that are no update, and
                # may raise others from Rust for ones that decode badly.
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise BadAdd(f"{self.path}: a bad update: {reason}") from None
        blob = values.get(BLOB)
        deleted = DELETED in values
        if update is not None and not deleted:
            order = (stamp, key[0], key[1])
            if self._newestText is None or order > self._newestText:
                self._newestText = order
            self.saves += 1
        if blob is not None or deleted:
            self._versions[key] = Version(
                key, stamp, offset, sha256(blob).digest() if blob is not None else None,
                len(blob) if blob is not None else 0, to if deleted else (),
            )
            if blob is not None:
                self.saves += 1
        self._superseded.update(after)
        self.changes += 1
        self.last = max(self.last, (stamp, key[0]))

    # What the adds make of the file

    @property
    def text(self):
        return str(self._text)

    def heads(self):
        """
        The whole-file versions no later add supersedes, blobs and deletes.
        """
        return [v for key, v in self._versions.items() if key not in self._superseded]

    def _blobHeads(self):
        return sorted((v for v in self.heads() if v.digest is not None), key=lambda v: v.order)

    @property
    def version(self):
        """
        What changes whenever the document does.
        """
        return (self.changes, self._touched)

    def _known(self):
        if self._facts is None or self._facts[0] != self.version:
            kind = self._kind()
            live = len(self._live) > 0 if kind == "text" else kind == "blob"
            self._facts = (self.version, kind, live)
        return self._facts

    @property
    def kind(self):
        """
        C{"blob"}, C{"text"}, or L{None} (see L{_kind}).
        """
        return self._known()[1]

    def _kind(self):
        """
        C{"blob"}, C{"text"}, or L{None} for a document that never held
        anything: a blob if a blob version is current and newer than the
        newest text save.
        """
        blobs = self._blobHeads()
        if blobs and (self._newestText is None or blobs[-1].order > self._newestText):
            return "blob"
        if self._newestText is not None:
            return "text"
        return None

    @property
    def live(self):
        """
        Whether the file exists.

        A text document exists while its C{live} map holds a key: each save
        replaces the keys it has seen by one of its own, and a delete
        removes the keys it has seen, so a save the delete did not see (a
        concurrent edit) keeps the file, with all of its text.  A blob
        exists while a current version is a blob, not a delete.
        """
        return self._known()[2]

    def winner(self):
        """
        The blob version the file holds (for a blob document).
        """
        return self._blobHeads()[-1]

    def conflicts(self):
        """
        The current blob versions that lost to the winner and differ from
        it, as C{(conflict copy path, version)}.
        """
        if self.kind != "blob":
            return []
        blobs = self._blobHeads()
        if len(blobs) < 2:
            return []
        winner = blobs[-1]
        return [
            (conflictName(self.path, v.key[0], v.stamp), v)
            for v in blobs[:-1]
            if v.digest != winner.digest
        ]

    # Making changes

    def saveText(self, text, base=None, heads=None):
        """
        The add that saves C{text} as this document's new text.

        The change is made on a C{Doc} of its own, whose client id is drawn
        from the state it is made on and the text: the same save made
        again (by a pass killed before it noted it had made it, or the
        same new file on two nodes) makes the same update, which merges as
        one.

        @param base: the state (an update) of the document as the file's
            writer last had it, if older than this one: the save is made on
            it, as an edit concurrent with what came since.  L{made} is
            then that state with the save.
        @param heads: the C{(by, at)} of the whole-file versions (blobs,
            deletes) the writer had seen, if not all of those now current.
        @return: the add's pairs.
        """
        doc, seed = self._docAt(base, text.encode("utf-8", "surrogatepass"))
        textType = doc.get("text", type=Text)
        live = doc.get("live", type=Map)
        old = str(textType)
        with doc.transaction():
            for start, end, inserted in reversed(utf8Edits(old, diff(old, text))):
                if end > start:
                    del textType[start:end]
                if inserted:
                    textType.insert(start, inserted)
            for name in list(live.keys()):
                del live[name]
            live[seed.hex()[:16]] = True
        after = [v.key for v in self.heads()] if heads is None else heads
        return [(DOC, self.path.encode("utf-8")), (UPDATE, self._made(doc, base)), (TIME, newTime())] + [
            (AFTER, b"%s:%d" % key) for key in after
        ]

    def renamedFrom(self, source, state, text):
        """
        The add that makes this new document the file C{source} renamed:
        its CRDT text continues C{source}'s (the same items), so that an
        edit made to C{source} by someone who had not seen the rename can
        be folded into it (see L{fold}).

        @param state: C{source}'s state (an update) as the renamed file held
            it, whose text is C{text}.
        @return: the add's pairs; its update is the whole state.
        """
        doc, seed = self._docAt(state, b"\0renamed from " + source.encode("utf-8"))
        live = doc.get("live", type=Map)
        with doc.transaction():
            for name in list(live.keys()):
                del live[name]
            live[seed.hex()[:16]] = True
        self._made(doc, state)
        whole = doc.get_update()
        self.crdt.apply_update(whole)
        self._touched += 1
        self.made = None
        return [(DOC, self.path.encode("utf-8")), (UPDATE, whole), (TIME, newTime()),
                (FROM, source.encode("utf-8"))]

    def renames(self):
        """
        The paths this document was renamed to by a delete no later add
        supersedes.
        """
        return sorted({path for v in self.heads() for path in v.to})

    def fold(self, source):
        """
        The add that folds into this document the changes of the document
        C{source} renamed to it that it lacks: the edits made to the old
        name by someone who had not seen the rename.  It makes nothing new,
        it only takes in C{source}'s CRDT items (which this document's
        share, the rename having copied them), so that folding is the same
        on every node and folding twice is folding once.

        @return: the add's pairs, or L{None} if there is nothing to fold.
        """
        doc = Doc()
        doc.get("text", type=Text)
        doc.get("live", type=Map)
        mine = self.update()
        doc.apply_update(mine)
        before = doc.get_state()
        doc.apply_update(source.update())
        # (A change that only deleted text makes no new item, so the state
        # vector alone does not tell.)
        if doc.get_update() == mine:
            return None
        update = doc.get_update(before)
        return [(DOC, self.path.encode("utf-8")), (UPDATE, update), (TIME, newTime()),
                (FROM, source.path.encode("utf-8"))]

    def saveBlob(self, data, heads):
        """
        The add that saves C{data} whole as this document's new version.

        @param heads: the C{(by, at)} of the versions it supersedes.
        """
        return [(DOC, self.path.encode("utf-8")), (BLOB, data), (TIME, newTime())] + [
            (AFTER, b"%s:%d" % key) for key in heads
        ]

    def delete(self, base=None, heads=(), to=()):
        """
        The add that deletes the file.

        @param base: as for L{saveText}: what the deleter had seen.
        @param heads: the blob versions it supersedes.
        @param to: the paths the file was renamed to, if it was.
        """
        pairs = [(DOC, self.path.encode("utf-8")), (DELETED, b"1"), (TIME, newTime())]
        if self._newestText is not None:
            doc, seed = self._docAt(base, b"\0deleted")
            live = doc.get("live", type=Map)
            with doc.transaction():
                for name in list(live.keys()):
                    del live[name]
            pairs.append((UPDATE, self._made(doc, base)))
        return pairs + [(AFTER, b"%s:%d" % key) for key in heads] + [
            (TO, path.encode("utf-8")) for path in to
        ]

    def _docAt(self, base, change):
        """
        A new C{Doc} holding the state C{base} (an update), or this
        document's state, with a client id drawn from that state and
        C{change}.

        @return: the C{Doc}, and the digest its client id was drawn from.
        """
        if base is None:
            base = self.update()
        seed = sha256(self.path.encode("utf-8") + b"\0" + sha256(base).digest() + change).digest()
        doc = Doc(client_id=int.from_bytes(seed[:8], "big") % _CLIENTS)
        doc.get("text", type=Text)
        doc.get("live", type=Map)
        doc.apply_update(base)
        # The update of the change's transaction alone: an update made
        # from a state vector would carry every delete the document has
        # ever had, since state vectors do not count deletes.
        self._updates = []
        self._subscription = doc.observe(lambda event: self._updates.append(event.update))
        return doc, seed

    def _made(self, doc, base):
        """
        The update a change made on C{doc} (from L{_docAt}); this
        document takes it in, and L{made} is C{doc}'s state if it was made
        on an older one.
        """
        # A Doc observed is never freed (pycrdt 0.14 keeps it, and all it
        # holds, while the subscription lives): a save leaked a copy of the
        # whole document.
        doc.unobserve(self._subscription)
        self._subscription = None
        # One transaction, one update; none if it changed nothing.
        update = self._updates[0] if self._updates else _NOTHING
        self.crdt.apply_update(update)
        self._touched += 1
        self.made = None if base is None else doc.get_update()
        return update

    def update(self):
        """
        The whole CRDT state, as one update (encoded once a version: the
        state file and the next save both want it).
        """
        if self._encoded is None or self._encoded[0] != self.version:
            self._encoded = (self.version, self.crdt.get_update())
        return self._encoded[1]

    # The cache

    def dump(self):
        """
        What the cache keeps of this document, the CRDT state aside.
        """
        return {
            "changes": self.changes,
            "saves": self.saves,
            "last": [self.last[0], self.last[1].decode("latin-1")],
            "newestText": None if self._newestText is None else [
                self._newestText[0], self._newestText[1].decode("latin-1"), self._newestText[2]
            ],
            "versions": [v.dump() for v in self._versions.values()],
            "superseded": [[by.decode("latin-1"), at] for by, at in self._superseded],
        }

    @classmethod
    def load(cls, path, update, data):
        document = cls(path, update)
        document.changes = data["changes"]
        document.saves = data["saves"]
        document.last = (data["last"][0], data["last"][1].encode("latin-1"))
        newest = data["newestText"]
        if newest is not None:
            document._newestText = (newest[0], newest[1].encode("latin-1"), newest[2])
        for item in data["versions"]:
            version = Version.load(item)
            document._versions[version.key] = version
        document._superseded = {(by.encode("latin-1"), at) for by, at in data["superseded"]}
        return document
