# -*- test-case-name: tests.test_documents -*-
"""
All the documents of a log, read from it a stretch at a time, and their
cache: each document's merged state as of some offset in the log, so that
opening a log with many documents or a long history reads only what was
appended since.
"""

import json
import os
from base64 import b64decode, b64encode
from hashlib import sha256

from gossip.documents.model import BadAdd, Document, documentOf
from gossip.store.format import CorruptLine, decodeBody, decodeLine, identify
from gossip.store.logfile import entries

__all__ = ["Collection", "readBlob"]

# How much of the log before the cached offset is fingerprinted, to tell a
# log replaced or rewritten under the cache.
_PRINT = 4096


def _mentionsDoc(body):
    return body.startswith(b"doc=") or b"&doc=" in body


def readBlob(f, offset):
    """
    The blob of the add whose line starts at C{offset} in the log C{f}.
    """
    f.seek(offset)
    pairs = decodeLine(f.readline())
    for name, value in pairs:
        if name == b"blob":
            return value
    raise BadAdd(f"the add at byte {offset} holds no blob")


class Collection:
    """
    The documents of one log.

    @ivar documents: path -> L{Document}.
    @ivar offset: how far into the log they reflect.
    @ivar skipped: how many adds naming a document were skipped as bad.
    @ivar damaged: how many damaged lines this object's reads met.
    @ivar intact: whether they met an intact add.
    @ivar report: called with a one-line message for each add skipped.
    @ivar before: if given, called with a document just before an add
        changes it (so a caller can keep the state it had).
    """

    def __init__(self, report=lambda message: None):
        self.documents = {}
        self.offset = 0
        self.skipped = 0
        self.damaged = 0
        self.intact = False
        self.report = report
        self.before = None
        self._fingerprint = None
        # path -> (document, its version, its part of the cache as JSON:
        # "PATH":{...}).
        self._dumped = {}

    def read(self, f, until=None, keep=None):
        """
        Take in the adds of the log C{f} from L{offset} on.

        @param until: if given, take in only adds whose time is at most this.
        @param keep: if given, called with each add's C{(offset, pairs,
            key, document)} once taken in.
        @return: the paths of the documents that changed.
        """
        changed = set()
        st = os.fstat(f.fileno())
        if self._fingerprint is not None and not self._stillValid(f, st):
            self.report("the log changed under its cached documents; reading it again")
            self.__init__(self.report)
        for offset, record, body in entries(f, self.offset):
            self.offset = offset + len(record) + 1
            if body is None:
                self.damaged += 1
                continue
            self.intact = True
            if not _mentionsDoc(body):
                continue
            try:
                key = identify(body)
                pairs = decodeBody(body)
            except CorruptLine:
                continue
            if key is None:
                continue
            try:
                path = documentOf(pairs)
                if path is None:
                    continue
                if until is not None and _stamp(pairs) > until:
                    continue
                document = self.documents.get(path)
                if document is None:
                    document = self.documents[path] = Document(path)
                elif self.before is not None:
                    self.before(document)
                document.absorb(pairs, key, offset)
            except BadAdd as e:
                self.skipped += 1
                self.report(f"skipped the add {key[0].decode('latin-1')}:{key[1]}: {e}")
                continue
            changed.add(path)
            if keep is not None:
                keep(offset, pairs, key, document)
        self._fingerprint = self._print(f, self.offset, st)
        return changed

    def _print(self, f, offset, st):
        start = max(0, offset - _PRINT)
        tail = os.pread(f.fileno(), offset - start, start)
        return [st.st_dev, st.st_ino, offset, sha256(tail).hexdigest()]

    def _stillValid(self, f, st):
        dev, ino, offset, digest = self._fingerprint
        if (st.st_dev, st.st_ino) != (dev, ino) or st.st_size < offset:
            return False
        return self._print(f, offset, st)[3] == digest

    # The cache

    def dump(self):
        """
        The cache of these documents, as JSON text.

        Each document's part is encoded again only once the document has
        changed, so that saving the cache of a folder of many documents
        after one of them changed costs little more than writing it.
        """
        parts = []
        dumped = {}
        for path, document in self.documents.items():
            known = self._dumped.get(path)
            if known is None or known[0] is not document or known[1] != document.version:
                entry = dict(document.dump(), update=b64encode(document.update()).decode("ascii"))
                text = json.dumps(path) + ":" + json.dumps(entry, separators=(",", ":"))
                known = (document, document.version, text)
            dumped[path] = known
            parts.append(known[2])
        self._dumped = dumped
        head = json.dumps({"log": self._fingerprint, "skipped": self.skipped}, separators=(",", ":"))
        return head[:-1] + ',"documents":{' + ",".join(parts) + "}}"

    @classmethod
    def load(cls, data, f, report=lambda message: None):
        """
        The documents a cache holds, if it describes the log C{f} as it is
        (or as it was, before more adds were appended); else none, to be
        read from the start.
        """
        collection = cls(report)
        fingerprint = data.get("log")
        if fingerprint is None:
            return collection
        collection._fingerprint = fingerprint
        if not collection._stillValid(f, os.fstat(f.fileno())):
            collection._fingerprint = None
            return collection
        collection.offset = fingerprint[2]
        collection.skipped = data["skipped"]
        for path, item in data["documents"].items():
            collection.documents[path] = Document.load(path, b64decode(item["update"]), item)
        return collection


def _stamp(pairs):
    for name, value in pairs:
        if name == b"time":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 0.0
