"""
Tests for L{gossip.documents}: documents that merge themselves, a folder
kept in step with a log, and C{gossip folder} and C{gossip doc}.

Most tests run passes of L{Folder} in this process on real files and real
logs, syncing the logs with L{Log.receive}, the store's own way of taking
a peer's adds; a few run C{gossip folder} and C{gossip sync} as real
processes.
"""

import gc
import itertools
import os
import random
import shutil
import signal
import time
import weakref

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from gossip.documents.folder import Folder, FolderError
from gossip.documents.ignore import Ignore
from gossip.documents.model import BadAdd, Document, checkPath
from gossip.documents.textdiff import diff, utf8Edits
from gossip.store.logfile import Log, entries
from tests.helpers import (
    Background,
    Daemon,
    gossipCommand,
    killMentioning,
    run,
    runMain,
    waitFor,
)

UNICODE = "naïve ☃ 😀 end\nsecond é line\n"


def exchange(*logs):
    """
    Sync logs pairwise, each taking what the others hold.
    """
    for source, destination in itertools.permutations(logs, 2):
        with open(source, "rb") as f:
            lines = [record + b"\n" for offset, record, body in entries(f) if body is not None]
        Log(destination).receive(b"".join(lines))


class Node:
    """
    A log and its folder, in a test's directory.
    """

    def __init__(self, testCase, name, root=None):
        root = root or testCase.mktemp()
        self.dir = os.path.abspath(os.path.join(root, name, "files"))
        os.makedirs(self.dir)
        self.log = os.path.join(root, name, "notes.log")
        self.reports = []

    def folder(self, **kwargs):
        folder = Folder(self.log, self.dir, report=self.reports.append, **kwargs)
        folder.open()
        return folder

    def sync(self):
        folder = self.folder()
        try:
            folder.sync()
        finally:
            folder.close()
        return folder

    def path(self, name):
        return os.path.join(self.dir, *name.split("/"))

    def write(self, name, data):
        path = self.path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb" if isinstance(data, bytes) else "w", encoding=None if isinstance(data, bytes) else "utf-8") as f:
            f.write(data)

    def read(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()

    def files(self):
        found = {}
        for directory, subdirectories, names in os.walk(self.dir):
            for name in names:
                full = os.path.join(directory, name)
                with open(full, "rb") as f:
                    found[os.path.relpath(full, self.dir)] = f.read()
        return found

    def adds(self):
        with open(self.log, "rb") as f:
            return sum(1 for offset, record, body in entries(f) if body is not None and b"doc=" in body)


def nodes(testCase, count):
    root = testCase.mktemp()
    return [Node(testCase, f"node{i}", root) for i in range(count)]


class DiffTests(TestCase):
    """
    L{diff} and L{utf8Edits}: edits in characters, then in UTF-8 bytes.
    """

    def apply(self, old, edits):
        for start, end, text in reversed(edits):
            old = old[:start] + text + old[end:]
        return old

    def test_roundTrip(self):
        for old, new in [
            ("", "abc"),
            ("abc", ""),
            (UNICODE, UNICODE.replace("☃", "snowman ☃ é")),
            (UNICODE, "😀" + UNICODE + "😀"),
            ("line\n" * 300, "line.\n" * 300),
        ]:
            self.assertEqual(self.apply(old, diff(old, new)), new)

    def test_utf8(self):
        """
        Positions after é, ☃ and 😀 count their UTF-8 bytes.
        """
        old = "é☃😀x"
        [(start, end, text)] = utf8Edits(old, [(3, 4, "y")])
        self.assertEqual((start, end, text), (9, 10, "y"))


class ModelTests(TestCase):
    """
    L{Document}: the CRDT text and whether the file exists.
    """

    def save(self, document, text, key, base=None):
        pairs = document.saveText(text, base=base)
        return pairs

    def test_concurrentEdits(self):
        """
        Edits made on two copies of a document, in different places and in
        non-ASCII text, both survive, the same way in either order.
        """
        a, b = Document("n"), Document("n")
        first = a.saveText(UNICODE)
        b.absorb(first, (b"A", 0), 0)
        editA = a.saveText(UNICODE.replace("☃", "☃☃"))
        editB = b.saveText(UNICODE.replace("second", "2nd 😀"))
        a.absorb(editB, (b"B", 0), 0)
        b.absorb(editA, (b"A", 1), 0)
        self.assertEqual(a.text, b.text)
        self.assertEqual(a.text, "naïve ☃☃ 😀 end\n2nd 😀 é line\n")

    def test_sameNewFile(self):
        """
        The same new text made on two nodes merges into one copy of it; a
        different one keeps both.
        """
        a, b = Document("n"), Document("n")
        a.absorb(b.saveText("same\n"), (b"B", 0), 0)
        a.saveText("same\n")
        self.assertEqual(a.text, "same\n")
        c = Document("n")
        c.absorb(Document("n").saveText("one\n"), (b"B", 0), 0)
        c.absorb(Document("n").saveText("two\n"), (b"C", 0), 0)
        self.assertIn(c.text, ("one\ntwo\n", "two\none\n"))

    def test_deleteAndConcurrentEdit(self):
        """
        A delete that saw every save deletes the file; an edit it did not
        see keeps the file, with all of its text.
        """
        a, b = Document("n"), Document("n")
        b.absorb(a.saveText("one\n"), (b"A", 0), 0)
        deleted = a.delete()
        self.assertFalse(a.live)
        edit = b.saveText("one\ntwo\n")
        a.absorb(edit, (b"B", 0), 0)
        b.absorb(deleted, (b"A", 1), 0)
        self.assertTrue(a.live)
        self.assertTrue(b.live)
        self.assertEqual((a.text, b.text), ("one\ntwo\n", "one\ntwo\n"))

    def test_changesLeaveNoDoc(self):
        """
        The C{Doc} a save or a delete is made on is freed once it is made:
        an observed C{Doc} lives as long as its subscription, and one left
        observed kept a copy of the whole document per save (12 GB over a
        100,000-keystroke trace).
        """
        made = []
        docAt = Document._docAt

        def recording(document, base, change):
            doc, seed = docAt(document, base, change)
            made.append(weakref.ref(doc))
            return doc, seed

        self.patch(Document, "_docAt", recording)
        document = Document("n")
        document.absorb(document.saveText("one\n"), (b"A", 0), 0)
        base = document.update()
        document.absorb(document.saveText("one\ntwo\n"), (b"A", 1), 0)
        document.absorb(document.saveText("one\n2\n", base=base), (b"A", 2), 0)
        document.delete()
        gc.collect()
        self.assertEqual(len(made), 4)
        self.assertEqual([ref() for ref in made], [None] * 4)

    def test_badUpdate(self):
        """
        An update pycrdt cannot read is a L{BadAdd}, and changes nothing.
        """
        document = Document("n")
        with self.assertRaises(BadAdd):
            document.absorb([(b"doc", b"n"), (b"update", b"\x05garbage")], (b"A", 0), 0)
        self.assertEqual(document.changes, 0)

    def test_paths(self):
        for bad in [b"/etc/passwd", b"../x", b"a/../b", b"a//b", b"", b"a/./b", b"\xff", b"a\0b"]:
            self.assertRaises(BadAdd, checkPath, bad)
        self.assertEqual(checkPath("é/x.md".encode()), "é/x.md")


class IgnoreTests(TestCase):
    """
    L{Ignore}: built-in rules and gitignore syntax.
    """

    def test_builtin(self):
        ignore = Ignore()
        for path in [".notes.md.swp", "a/b~", ".#lock", "4913", "a/.x.gossip-tmp-ab"]:
            self.assertTrue(ignore.ignored(path), path)
        self.assertTrue(ignore.ignored(".git", isDirectory=True))
        self.assertFalse(ignore.ignored("notes.md"))

    def test_gitignore(self):
        ignore = Ignore(["*.log", "!keep.log", "build/", "/top.txt", "docs/**/*.tmp", "# comment"])
        self.assertTrue(ignore.ignored("x.log"))
        self.assertTrue(ignore.ignored("a/b/x.log"))
        self.assertFalse(ignore.ignored("keep.log"))
        self.assertTrue(ignore.ignored("build", isDirectory=True))
        self.assertFalse(ignore.ignored("build"))
        self.assertTrue(ignore.ignored("top.txt"))
        self.assertFalse(ignore.ignored("a/top.txt"))
        self.assertTrue(ignore.ignored("docs/a/b/c.tmp"))
        self.assertTrue(ignore.ignoredAnywhere("build/out.txt"))


class FolderTests(TestCase):
    """
    L{Folder}: files to adds and adds to files, on real files.
    """

    def test_twoNodes(self):
        """
        Two nodes edit one file in different places while apart; once their
        logs are synced, both folders hold the same bytes, with both edits.
        """
        a, b = nodes(self, 2)
        a.write("notes/todo.md", UNICODE)
        a.sync()
        exchange(a.log, b.log)
        b.sync()
        self.assertEqual(b.read("notes/todo.md"), UNICODE.encode())
        a.write("notes/todo.md", UNICODE.replace("naïve", "NAÏVE"))
        b.write("notes/todo.md", UNICODE + "third ☃\n")
        a.sync()
        b.sync()
        exchange(a.log, b.log)
        a.sync()
        b.sync()
        expected = UNICODE.replace("naïve", "NAÏVE") + "third ☃\n"
        self.assertEqual(a.read("notes/todo.md"), expected.encode())
        self.assertEqual(b.files(), a.files())

    def test_threeNodesEveryOrder(self):
        """
        Three nodes, each editing its own line, synced pairwise in every
        order, end with identical files holding all three edits.
        """
        base = "".join(f"line {i}\n" for i in range(6))
        for order in itertools.permutations([(0, 1), (1, 2), (0, 2)]):
            trio = nodes(self, 3)
            trio[0].write("f.txt", base)
            trio[0].sync()
            exchange(*(node.log for node in trio))
            for i, node in enumerate(trio):
                node.sync()
                node.write("f.txt", base.replace(f"line {2 * i}", f"line {2 * i} by {i} é"))
                node.sync()
            for first, second in order + order:
                exchange(trio[first].log, trio[second].log)
                trio[first].sync()
                trio[second].sync()
            texts = {node.read("f.txt") for node in trio}
            self.assertEqual(len(texts), 1, order)
            [text] = texts
            for i in range(3):
                self.assertIn(f"line {2 * i} by {i} é".encode(), text)

    @settings(max_examples=25, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.integers(0, 2),
                st.sampled_from(["insert", "delete", "sync"]),
                st.integers(0, 1000),
                st.sampled_from(["x", "é", "☃", "😀\n", "word "]),
                st.integers(0, 2),
            ),
            max_size=25,
        )
    )
    def test_converge(self, script):
        """
        Random edits on three replicas, synced in any order, end as
        identical text everywhere.
        """
        trio = nodes(self, 3)
        trio[0].write("doc.txt", "start\n")
        trio[0].sync()
        exchange(*(node.log for node in trio))
        for node in trio:
            node.sync()
        for who, action, where, text, other in script:
            node = trio[who]
            current = node.read("doc.txt").decode()
            i = where % (len(current) + 1)
            if action == "insert":
                node.write("doc.txt", current[:i] + text + current[i:])
                node.sync()
            elif action == "delete":
                node.write("doc.txt", current[:i] + current[i + len(text) :])
                node.sync()
            elif other != who:
                exchange(node.log, trio[other].log)
                node.sync()
                trio[other].sync()
        exchange(*(node.log for node in trio))
        for node in trio:
            node.sync()
        self.assertEqual(len({node.read("doc.txt") for node in trio}), 1)

    @settings(max_examples=50, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.integers(0, 2),
                st.sampled_from(["insert", "insert", "rename", "sync"]),
                st.integers(0, 1000),
                st.sampled_from(["p.txt", "q.txt", None]),
                st.integers(0, 2),
            ),
            max_size=20,
        )
    )
    def test_convergeWithRenames(self, script):
        """
        Random edits and renames on three replicas, synced in any order,
        end as the same files everywhere, and no edit is lost.
        """
        trio = nodes(self, 3)
        trio[0].write("doc.txt", "start\n")
        trio[0].sync()
        self.settled(*trio, rounds=1)
        markers = []
        for step, (who, action, where, target, other) in enumerate(script):
            node = trio[who]
            files = sorted(node.files())
            if not files:
                continue
            name = files[where % len(files)]
            if action == "insert":
                current = node.read(name).decode()
                lines = current.splitlines(keepends=True)
                at = where % (len(lines) + 1)
                markers.append(f"mark {step}\n")
                node.write(name, "".join(lines[:at] + [markers[-1]] + lines[at:]))
                node.sync()
            elif action == "rename":
                target = target or f"r{step}.txt"
                if not os.path.exists(node.path(target)):
                    os.rename(node.path(name), node.path(target))
                    node.sync()
            elif other != who:
                exchange(node.log, trio[other].log)
                node.sync()
                trio[other].sync()
        self.settled(*trio, rounds=3)
        held = [node.files() for node in trio]
        self.assertEqual(held[0], held[1])
        self.assertEqual(held[0], held[2])
        text = b"".join(held[0].values()).decode()
        for marker in markers:
            self.assertIn(marker, text)

    def test_renamesCrossing(self):
        """
        Renames that cross (doc.txt to p.txt then q.txt on one node, to
        q.txt then p.txt on another, edited meanwhile) fold one name into
        the other once, and every edit is in a file on every node: the
        case hypothesis found in L{test_convergeWithRenames}, where each
        name was folded into the other and both deleted.
        """
        script = [(0, "insert", 0, "p.txt", 0)] * 11 + [
            (0, "rename", 0, "p.txt", 0),
            (0, "rename", 0, "q.txt", 0),
            (1, "rename", 0, "q.txt", 0),
            (1, "rename", 0, "p.txt", 0),
        ]
        type(self).test_convergeWithRenames.hypothesis.inner_test(self, script)

    def test_renameOver(self):
        """
        A save written to a new file renamed over the old (vim, emacs, VS
        Code), and one that truncates and rewrites, are each one change.
        """
        a, b = nodes(self, 2)
        a.write("x.md", "one\n")
        a.sync()
        temporary = a.path("x.md.new")
        with open(temporary, "w") as f:
            f.write("one\ntwo\n")
        os.rename(temporary, a.path("x.md"))
        a.sync()
        with open(a.path("x.md"), "r+") as f:
            f.truncate(0)
            f.write("one\ntwo\nthree\n")
        a.sync()
        exchange(a.log, b.log)
        b.sync()
        self.assertEqual(b.read("x.md"), b"one\ntwo\nthree\n")
        self.assertEqual(a.adds(), 3)

    def settled(self, *nodes, rounds=2):
        """
        Sync every node's log with the others' and run a pass on each,
        C{rounds} times (a pass may fold a rename, which makes adds).
        """
        for _ in range(rounds):
            exchange(*(node.log for node in nodes))
            for node in nodes:
                node.sync()

    def renamed(self):
        """
        Two nodes holding C{x.md}; node a renames it to C{notes/y.md}.
        """
        a, b = nodes(self, 2)
        a.write("x.md", UNICODE)
        a.sync()
        self.settled(a, b, rounds=1)
        os.makedirs(a.path("notes"))
        os.rename(a.path("x.md"), a.path("notes/y.md"))
        a.sync()
        return a, b

    def test_rename(self):
        """
        A file gone and one new with its bytes in one pass are a rename:
        the new name's add says where it came from and continues its CRDT
        text, the old name's delete says where it went.
        """
        a, b = self.renamed()
        with open(a.log, "rb") as f:
            bodies = [body for offset, record, body in entries(f) if body is not None][-2:]
        self.assertIn(b"doc=notes/y.md", bodies[0])
        self.assertIn(b"from=x.md", bodies[0])
        self.assertIn(b"doc=x.md", bodies[1])
        self.assertIn(b"to=notes/y.md", bodies[1])
        self.settled(a, b)
        for node in (a, b):
            self.assertEqual(node.files(), {os.path.join("notes", "y.md"): UNICODE.encode()})
        status, out, err = runMain("doc", "history", b.log, "notes/y.md")
        self.assertTrue(out.endswith(b", from x.md\n"), out)
        status, out, err = runMain("doc", "history", b.log, "x.md")
        self.assertTrue(out.endswith(b"deleted, renamed to notes/y.md\n"), out)

    def test_renameAgainstEdit(self):
        """
        An edit of the old name made by someone who had not seen the
        rename is folded into the new name: both folders end with only the
        new name, holding the edit.
        """
        a, b = self.renamed()
        b.write("x.md", UNICODE + "edited on b\n")
        b.sync()
        self.settled(a, b)
        for node in (a, b):
            self.assertEqual(
                node.files(), {os.path.join("notes", "y.md"): (UNICODE + "edited on b\n").encode()}
            )
        # Edited and then renamed again on a, edited again on b meanwhile.
        a.write("notes/y.md", "top\n" + UNICODE + "edited on b\n")
        a.sync()
        os.rename(a.path("notes/y.md"), a.path("z.md"))
        a.sync()
        b.write("notes/y.md", UNICODE + "edited on b\nagain\n")
        b.sync()
        self.settled(a, b)
        for node in (a, b):
            self.assertEqual(node.files(), {"z.md": ("top\n" + UNICODE + "edited on b\nagain\n").encode()})

    def test_renameFoldedByMany(self):
        """
        Two nodes edit the old name, a third renames it; whichever nodes
        fold the edits in, in whatever order the logs meet, all three end
        with the new name alone holding both edits.
        """
        lines = [f"line {i}\n" for i in range(6)]
        for order in itertools.permutations(range(3)):
            trio = nodes(self, 3)
            trio[0].write("x.md", "".join(lines))
            trio[0].sync()
            self.settled(*trio, rounds=1)
            os.rename(trio[0].path("x.md"), trio[0].path("y.md"))
            trio[0].sync()
            trio[1].write("x.md", "".join(lines[:2] + ["from 1\n"] + lines[2:]))
            trio[1].sync()
            trio[2].write("x.md", "".join(lines[:5] + ["from 2\n"] + lines[5:]))
            trio[2].sync()
            first, second, third = (trio[i] for i in order)
            exchange(first.log, second.log)
            first.sync()
            second.sync()
            exchange(second.log, third.log)
            third.sync()
            second.sync()
            self.settled(*trio)
            wanted = "".join(lines[:2] + ["from 1\n"] + lines[2:5] + ["from 2\n"] + lines[5:])
            for node in trio:
                self.assertEqual(node.files(), {"y.md": wanted.encode()}, order)

    def test_renameThenNewOld(self):
        """
        A new file made under the old name by someone who had seen the
        rename is a file of its own, not folded.
        """
        a, b = self.renamed()
        self.settled(a, b)
        b.write("x.md", "a new x\n")
        b.sync()
        self.settled(a, b)
        for node in (a, b):
            self.assertEqual(
                node.files(), {"x.md": b"a new x\n", os.path.join("notes", "y.md"): UNICODE.encode()}
            )

    def test_renameSettles(self):
        """
        While a folder is watched, a file new with the bytes of a file gone
        but not yet settled waits for it: the two become a rename.
        """
        a = nodes(self, 1)[0]
        now = [0.0]
        folder = a.folder(settle=0.5, clock=lambda: now[0])
        self.addCleanup(folder.close)
        a.write("x.md", "x\n")
        folder.sync()
        os.rename(a.path("x.md"), a.path("y.md"))
        self.assertTrue(folder.sync())
        self.assertEqual(a.adds(), 1)
        now[0] = 1.0
        self.assertFalse(folder.sync())
        self.assertEqual(a.adds(), 3)
        self.assertEqual(folder.documents["y.md"].text, "x\n")
        self.assertFalse(folder.documents["x.md"].live)
        self.assertEqual(folder.documents["x.md"].renames(), ["y.md"])

    def test_ownWritesNotChanges(self):
        """
        A file gossip wrote is not read back as a change.
        """
        a, b = nodes(self, 2)
        a.write("x.md", "one\n")
        a.sync()
        exchange(a.log, b.log)
        b.sync()
        b.sync()
        self.assertEqual(b.adds(), 1)

    def test_deleteAgainstEdit(self):
        """
        A delete made while another node edits the file: the edit keeps the
        file, whole, everywhere.  A delete alone deletes it everywhere.
        """
        a, b = nodes(self, 2)
        a.write("x.md", "one\n")
        a.sync()
        exchange(a.log, b.log)
        b.sync()
        os.unlink(a.path("x.md"))
        a.sync()
        b.write("x.md", "one\ntwo\n")
        b.sync()
        exchange(a.log, b.log)
        a.sync()
        b.sync()
        self.assertEqual((a.read("x.md"), b.read("x.md")), (b"one\ntwo\n", b"one\ntwo\n"))
        os.unlink(b.path("x.md"))
        b.sync()
        exchange(a.log, b.log)
        a.sync()
        self.assertEqual((a.files(), b.files()), ({}, {}))

    def test_sameNewFile(self):
        """
        The same new file made on two nodes is one file after syncing.
        """
        a, b = nodes(self, 2)
        a.write("new.md", UNICODE)
        b.write("new.md", UNICODE)
        a.sync()
        b.sync()
        exchange(a.log, b.log)
        a.sync()
        b.sync()
        self.assertEqual((a.read("new.md"), b.read("new.md")), (UNICODE.encode(),) * 2)

    def test_binaryConflict(self):
        """
        Two versions of a binary file made apart: the newer is the file on
        both nodes, the other a conflict copy with the same name on both.
        """
        a, b = nodes(self, 2)
        a.write("photo.jpg", b"\xff\xd8 first")
        a.sync()
        exchange(a.log, b.log)
        b.sync()
        a.write("photo.jpg", b"\xff\xd8 from a")
        a.sync()
        time.sleep(0.01)
        b.write("photo.jpg", b"\xff\xd8 from b")
        b.sync()
        exchange(a.log, b.log)
        a.sync()
        b.sync()
        self.assertEqual(a.files(), b.files())
        files = a.files()
        self.assertEqual(files.pop("photo.jpg"), b"\xff\xd8 from b")
        [(name, data)] = files.items()
        self.assertTrue(name.startswith("photo.conflict-") and name.endswith(".jpg"), name)
        self.assertEqual(data, b"\xff\xd8 from a")
        # A later save supersedes both: no new copy.
        a.write("photo.jpg", b"\xff\xd8 resolved")
        a.sync()
        exchange(a.log, b.log)
        b.sync()
        self.assertEqual(b.read("photo.jpg"), b"\xff\xd8 resolved")

    def test_ignored(self):
        """
        Version control, swap and backup files and what .gossipignore lists
        are not documents.
        """
        a, b = nodes(self, 2)
        a.write(".gossipignore", "*.o\nbuild/\n!keep.o\n")
        for name in [".git/config", ".x.md.swp", "x.md~", ".#x.md", "4913", "a.o", "build/x", "keep.o", "x.md"]:
            a.write(name, "data\n")
        a.sync()
        exchange(a.log, b.log)
        b.sync()
        self.assertEqual(sorted(b.files()), [".gossipignore", "keep.o", "x.md"])

    def test_badAdds(self):
        """
        Adds with a bad path, a bad update or a bad time are each skipped
        with a one-line message and counted; the others are written.
        """
        a = nodes(self, 1)[0]
        log = Log(a.log)
        log.say([(b"doc", b"/etc/passwd"), (b"update", b"")])
        log.say([(b"doc", b"../escape"), (b"update", b"")])
        log.say([(b"doc", b"bad.md"), (b"update", b"\x07nonsense")])
        log.say([(b"doc", b"t.md"), (b"time", b"soon")])
        good = Document("good.md").saveText("good\n")
        log.say(good)
        folder = a.sync()
        self.assertEqual(a.files(), {"good.md": b"good\n"})
        self.assertEqual(folder.problems, 4)
        self.assertEqual(len(a.reports), 4)
        self.assertTrue(all("\n" not in report for report in a.reports))

    def test_symlinkAndClash(self):
        """
        A document under a symbolic link, or where a file stands in for its
        folder, is not written; the others are.
        """
        a, b = nodes(self, 2)
        a.write("link/x.md", "x\n")
        a.write("clash/y.md", "y\n")
        a.write("ok.md", "ok\n")
        a.sync()
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        os.symlink(outside, b.path("link"))
        b.write("clash", "a file\n")
        exchange(a.log, b.log)
        folder = b.sync()
        self.assertEqual(os.listdir(outside), [])
        self.assertEqual(b.read("ok.md"), b"ok\n")
        self.assertEqual(folder.problems, 2)

    def test_missingFolder(self):
        a = nodes(self, 1)[0]
        shutil.rmtree(a.dir)
        self.assertRaises(FolderError, a.folder)

    def test_stateDeleted(self):
        """
        The state file is only an optimisation: without it, a pass rebuilds
        it, writes no file and makes no add.
        """
        a = nodes(self, 1)[0]
        a.write("x.md", UNICODE)
        a.write("b.bin", b"\xff\x00")
        a.sync()
        adds = a.adds()
        os.unlink(os.path.join(os.path.dirname(a.log), ".notes.log.gossip-folder"))
        a.sync()
        self.assertEqual(a.adds(), adds)
        self.assertEqual(a.read("x.md"), UNICODE.encode())

    def test_crashAfterSay(self):
        """
        A pass killed after its add was written but before its state was:
        the next pass makes the same update again, which merges as one.
        """
        a = nodes(self, 1)[0]
        a.write("x.md", "one\n")
        a.sync()
        state = os.path.join(os.path.dirname(a.log), ".notes.log.gossip-folder")
        shutil.copy(state, state + ".before")
        a.write("x.md", "one\ntwo ☃\n")
        a.sync()
        shutil.copy(state + ".before", state)
        a.sync()
        self.assertEqual(a.read("x.md"), "one\ntwo ☃\n".encode())

    def test_stateKeepsEveryChange(self):
        """
        The state a folder left running saves holds each document as it
        last changed, whether by a save here or by an add from a peer,
        though it encodes again only the documents that changed.
        """
        a, b = nodes(self, 2)
        for name in ("x.md", "y.md", "z.md"):
            a.write(name, f"{name}\n")
        folder = a.folder()
        self.addCleanup(folder.close)
        folder.sync()
        a.write("x.md", "x.md\nmore\n")
        folder.sync()
        exchange(a.log, b.log)
        b.sync()
        b.write("y.md", "y.md from b\n")
        b.sync()
        exchange(a.log, b.log)
        folder.sync()
        again = a.folder()
        self.addCleanup(again.close)
        self.assertEqual(
            {path: document.text for path, document in again.documents.items()},
            {"x.md": "x.md\nmore\n", "y.md": "y.md from b\n", "z.md": "z.md\n"},
        )
        self.assertEqual(again._collection.offset, os.path.getsize(a.log))

    def test_foldsBeforeWriting(self):
        """
        A file changed on disk since gossip read it is folded in before a
        newer document is written over it: both changes are kept.
        """
        a, b = nodes(self, 2)
        a.write("x.md", "one\ntwo\nthree\n")
        a.sync()
        exchange(a.log, b.log)
        b.sync()
        b.write("x.md", "one\ntwo\nthree\nfour\n")
        b.sync()
        exchange(a.log, b.log)
        folder = a.folder()
        try:
            folder._readLog()
            # A person saves between gossip reading the log and writing.
            a.write("x.md", "ONE\ntwo\nthree\n")
            folder._write()
            folder.sync()
        finally:
            folder.close()
        self.assertEqual(a.read("x.md"), b"ONE\ntwo\nthree\nfour\n")


class CommandTests(TestCase):
    """
    C{gossip folder --once} and C{gossip doc}, with C{gossip sync}, as the
    command line runs them.
    """

    def test_foldersSyncedByGossipSync(self):
        """
        Two logs with their folders, each edited apart, synced by gossip
        sync: both folders hold identical bytes with both edits.
        """
        a, b = nodes(self, 2)
        a.write("todo.md", UNICODE)
        self.assertEqual(run("folder", "--once", a.log, a.dir)[0], 0)
        status, out, err = run("clone", a.log, b.log + ".tmp", "--any-name")
        os.makedirs(os.path.dirname(b.log), exist_ok=True)
        os.rename(b.log + ".tmp", b.log)
        self.assertEqual(run("folder", "--once", b.log, b.dir), (0, b"", ""))
        a.write("todo.md", UNICODE.replace("end", "END"))
        b.write("todo.md", "first 😀\n" + UNICODE)
        for node in (a, b):
            self.assertEqual(run("folder", "--once", node.log, node.dir)[0], 0)
        self.assertEqual(run("sync", "--once", a.log, b.log)[0], 0)
        for node in (a, b):
            self.assertEqual(run("folder", "--once", node.log, node.dir)[0], 0)
        expected = ("first 😀\n" + UNICODE.replace("end", "END")).encode()
        self.assertEqual((a.read("todo.md"), b.read("todo.md")), (expected, expected))

    def test_doc(self):
        """
        gossip doc list, show (now and as it stood), and history.
        """
        a = nodes(self, 1)[0]
        a.write("x.md", "one\n")
        a.sync()
        middle = time.time()
        time.sleep(0.01)
        a.write("x.md", "one\ntwo\nthree\n")
        a.sync()
        status, out, err = runMain("doc", "list", a.log)
        self.assertEqual((status, err), (0, b""))
        path, size, when, by = out.decode().rstrip("\n").split("\t")
        self.assertEqual((path, size), ("x.md", "14"))
        self.assertEqual(runMain("doc", "show", a.log, "x.md")[1], b"one\ntwo\nthree\n")
        self.assertEqual(runMain("doc", "show", "--at", str(middle), a.log, "x.md")[1], b"one\n")
        status, out, err = runMain("doc", "history", a.log, "x.md")
        self.assertEqual([line.split("\t")[2] for line in out.decode().splitlines()], ["+1 -0", "+2 -0"])

    def test_docMistakes(self):
        """
        Mistakes are one line on stderr and a non-zero exit.
        """
        a = nodes(self, 1)[0]
        a.write("x.md", "one\n")
        a.sync()
        notALog = self.mktemp()
        with open(notALog, "w") as f:
            f.write("".join(f"{n}\n" for n in range(1000)))
        for argv in [
            ("doc", "list", notALog),
            ("doc", "show", a.log, "nope.md"),
            ("doc", "show", "--at", "yesterday", a.log, "x.md"),
            ("doc", "list", a.log + ".missing"),
            ("doc", "frobnicate", a.log),
            ("folder", "--once", a.log, a.dir + ".missing"),
        ]:
            status, out, err = runMain(*argv)
            self.assertNotEqual(status, 0, argv)
            self.assertEqual(err.count(b"\n"), 1, (argv, err))
            self.assertTrue(err.startswith(b"gossip: "), err)


class ContinuousTests(TestCase):
    """
    C{gossip folder} left running on two nodes, with C{gossip sync} between
    their logs: real processes.
    """

    def test_saveAppearsElsewhere(self):
        a, b = nodes(self, 2)
        Log(a.log).say([(b"hello", b"a")])
        self.assertEqual(run("clone", a.log, b.log + ".new", "--any-name")[0], 0)
        os.rename(b.log + ".new", b.log)
        for node in (a, b):
            Background(self, gossipCommand("folder", node.log, node.dir)).waitForStderr("in step with")
        Background(self, gossipCommand("sync", a.log, b.log))
        a.write("x.md", "from a\n")
        waitFor(lambda: os.path.exists(b.path("x.md")) and b.read("x.md") == b"from a\n")
        b.write("x.md", "from a\nfrom b\n")
        waitFor(lambda: a.read("x.md") == b"from a\nfrom b\n")
        os.unlink(a.path("x.md"))
        waitFor(lambda: not os.path.exists(b.path("x.md")))

    def test_killedAtRandom(self):
        """
        A folder process killed (SIGKILL) at random instants while files are
        saved: after a last pass, every saved line is in the file.
        """
        a = nodes(self, 1)[0]
        a.write("x.md", "")
        lines = []
        rng = random.Random(13)
        for round in range(6):
            process = Background(self, gossipCommand("folder", a.log, a.dir))
            process.waitForStderr("in step with")
            for i in range(rng.randint(1, 8)):
                lines.append(f"round {round} line {i} ☃\n")
                a.write("x.md", "".join(lines))
                time.sleep(rng.uniform(0, 0.02))
            time.sleep(rng.uniform(0, 0.01))
            process.stop(signal.SIGKILL)
        self.assertEqual(run("folder", "--once", a.log, a.dir)[0], 0)
        text = a.read("x.md").decode()
        self.assertEqual(text, "".join(lines))
        status, out, err = runMain("doc", "show", a.log, "x.md")
        self.assertEqual(out.decode(), text)


class DaemonOptionTests(TestCase):
    """
    C{twistd gossip --folder DIR}: a folder per log, checked when parsed.
    """

    def test_folder(self):
        from twisted.python.usage import UsageError

        from gossip.tap import Options, makeService
        from gossip.documents.service import FolderService

        a = nodes(self, 1)[0]
        options = Options()
        options.parseOptions(["--log", a.log, "--folder", a.dir, "--listen", "none"])
        self.assertEqual(options["folders"], [(a.log, a.dir)])
        service = makeService(options)
        self.assertEqual(
            [type(child) for child in service if isinstance(child, FolderService)], [FolderService]
        )
        for argv in (["--folder", a.dir, "--log", a.log], ["--log", a.log, "--folder", a.dir + ".missing"]):
            self.assertRaises(UsageError, Options().parseOptions, argv)


class DaemonOverSSHTests(TestCase):
    """
    Two C{twistd gossip --folder} daemons, one reaching the other over SSH
    on loopback with real keys and C{known_hosts}: real processes, ports
    the system chose.
    """

    def daemons(self):
        from tests.test_openssh import Keys, publicLine

        self.root = os.path.abspath(self.mktemp())
        self.addCleanup(killMentioning, self.root)
        a, b = (Node(self, name, self.root) for name in ("a", "b"))
        one, two = Keys(os.path.join(self.root, "k1")), Keys(os.path.join(self.root, "k2"))
        authorized = os.path.join(self.root, "authorized_keys")
        with open(authorized, "w") as f:
            f.write(publicLine(two.clientKey) + "\n")
        first = Daemon(
            self,
            "--log", a.log, "--folder", a.dir,
            "--listen", "tcp:0:interface=127.0.0.1",
            "--host-key", one.host,
            "--authorized-keys", authorized,
        )  # fmt: skip
        port = first.listeningPort("SSH")
        two.trust(port, one.hostKey)
        secondArgs = (
            "--log", b.log, "--folder", b.dir,
            "--peer", f"ssh://127.0.0.1:{port}",
            "--identity", two.client,
            "--known-hosts", two.knownHosts,
        )  # fmt: skip
        return a, b, first, secondArgs

    def test_saveAppearsAndOfflineEditsMerge(self):
        """
        A save on one daemon's folder appears in the other's file, both
        ways; with one daemon stopped, the same file edited in different
        places on both sides ends, once it restarts, as the same bytes on
        both holding both edits; a file renamed while both watch is one
        rename on both.
        """
        a, b, first, secondArgs = self.daemons()
        second = Daemon(self, *secondArgs)
        second.waitForLog(r"synced with ssh://")

        def same(name, data):
            return lambda: all(
                os.path.exists(node.path(name)) and node.read(name) == data for node in (a, b)
            )

        lines = [f"line {i} ☃\n" for i in range(20)]
        a.write("notes/x.md", "".join(lines))
        waitFor(same("notes/x.md", "".join(lines).encode()), message="a's save in b's file")
        lines[10] = "line 10, from b\n"
        b.write("notes/x.md", "".join(lines))
        waitFor(same("notes/x.md", "".join(lines).encode()), message="b's save in a's file")

        second.shutDown()
        adds = a.adds()
        a.write("notes/x.md", "top, from a\n" + "".join(lines))
        waitFor(lambda: a.adds() > adds, message="a's offline save in a's log")
        b.write("notes/x.md", "".join(lines) + "bottom, from b\n")
        second = Daemon(self, *secondArgs)
        merged = ("top, from a\n" + "".join(lines) + "bottom, from b\n").encode()
        waitFor(same("notes/x.md", merged), message="both offline edits in both files")
        self.assertEqual(a.files(), b.files())

        # A rename, while both watch: one rename, on both sides.
        os.rename(a.path("notes/x.md"), a.path("y.md"))
        waitFor(
            lambda: all(node.files() == {"y.md": merged} for node in (a, b)),
            message="the rename on both sides",
        )
        status, out, err = runMain("doc", "history", b.log, "y.md")
        self.assertTrue(out.endswith(b", from notes/x.md\n"), out)
