"""
Tests for the shape of the package: what C{gossip say} and C{gossip ask}
import when they start, that no module imports another that imports it
back, and that imports point one way, store <- sync <- transport <- cli/tap.
Also that the command line's quick parsing of say, ask and chat reads
every argument list exactly as its full parser does.
"""

import ast
import json
import os
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, TestCase

from gossip.cli import main
from gossip.store import format
from gossip.store.logfile import Log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "gossip")

# What the store and the command line's fast paths must not load: Twisted
# and what it brings, each of which costs start-up time.
SLOW = ("twisted", "zope", "attr", "attrs", "cryptography", "OpenSSL", "pycrdt")

# Each layer, and the layers it must not import from.
LAYERS = {
    "gossip.store": ("gossip.sync", "gossip.documents", "gossip.transport", "gossip.control", "gossip.cli", "gossip.tap"),
    "gossip.sync": ("gossip.documents", "gossip.transport", "gossip.control", "gossip.cli", "gossip.tap"),
    "gossip.documents": ("gossip.transport", "gossip.control", "gossip.cli", "gossip.tap"),
    "gossip.transport": ("gossip.documents", "gossip.control", "gossip.cli", "gossip.tap"),
    "gossip.control": ("gossip.cli", "gossip.tap"),
}


def modules():
    """
    The dotted name and source path of every module in the package.
    """
    found = {}
    for directory, subdirectories, files in os.walk(PACKAGE):
        subdirectories[:] = [name for name in subdirectories if name != "__pycache__"]
        package = os.path.relpath(directory, ROOT).replace(os.sep, ".")
        for name in files:
            if name.endswith(".py"):
                module = name[: -len(".py")]
                dotted = package if module == "__init__" else f"{package}.{module}"
                found[dotted] = os.path.join(directory, name)
    return found


def _imported(node, module, isPackage, known):
    """
    The gossip modules an import statement names.
    """
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in known]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        parent = parts[: len(parts) - node.level + isPackage]
        base = ".".join(parent + ([base] if base else []))
    names = []
    for alias in node.names:
        # from gossip.transport import ssh imports a module; from
        # gossip.transport.errors import CommandError, a name in one.
        submodule = f"{base}.{alias.name}"
        if submodule in known:
            names.append(submodule)
        elif base in known:
            names.append(base)
    return names


def importGraph():
    """
    Which gossip modules each gossip module imports, at its top or in any
    function, read from the source.
    """
    known = modules()
    graph = {}
    for module, path in known.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        isPackage = path.endswith("__init__.py")
        graph[module] = {
            imported
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for imported in _imported(node, module, isPackage, known)
            if imported != module
        }
    return graph


def findCycle(graph):
    """
    A list of modules each importing the next and the last the first, or
    L{None} if the graph has no cycle.
    """
    done = set()

    def visit(module, path):
        if module in path:
            return path[path.index(module) :]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            cycle = visit(imported, path)
            if cycle is not None:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle is not None:
            return cycle
    return None


def inLayer(module, layer):
    return module == layer or module.startswith(layer + ".")


class ImportGraphTests(TestCase):
    """
    The package's modules import one another one way.
    """

    def test_graph(self):
        """
        The graph read from the source holds imports made at a module's top
        and inside functions, named either way.
        """
        graph = importGraph()
        self.assertIn("gossip.store.format", graph["gossip.store.logfile"])
        self.assertIn("gossip.cli.output", graph["gossip.cli.main"])
        self.assertIn("gossip.transport.ssh.client", graph["gossip.transport.reach"])

    def test_findCycle(self):
        """
        L{findCycle} names the modules of a cycle, in import order, and
        finds none where there is none.
        """
        self.assertEqual(findCycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}), ["a", "b", "c"])
        self.assertEqual(findCycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}), None)

    def test_noCycle(self):
        """
        No gossip module imports, directly or not, a module that imports it.
        """
        cycle = findCycle(importGraph())
        if cycle is not None:
            self.fail("import cycle: " + " -> ".join(cycle + cycle[:1]))

    def test_layers(self):
        """
        The store imports nothing from sync, the transports, the command
        line or the daemon; sync nothing from the last three; the
        transports nothing from the last two.
        """
        wrong = [
            f"{module} imports {imported}"
            for module, imports in sorted(importGraph().items())
            for layer, below in LAYERS.items()
            if inLayer(module, layer)
            for imported in sorted(imports)
            if any(inLayer(imported, forbidden) for forbidden in below)
        ]
        self.assertEqual(wrong, [])

    def test_testCaseNames(self):
        """
        Every module's C{test-case-name} names test modules that exist.
        """
        tests = os.path.join(ROOT, "tests")
        wrong = []
        for module, path in sorted(modules().items()):
            with open(path, encoding="utf-8") as f:
                first = f.readline()
            if "test-case-name:" not in first:
                continue
            named = first.split("test-case-name:")[1].replace("-*-", "").split(",")
            for name in (name.strip() for name in named):
                test = os.path.join(tests, name.split(".", 1)[-1] + ".py")
                if not name.startswith("tests.") or not os.path.exists(test):
                    wrong.append(f"{module} names {name}")
        self.assertEqual(wrong, [])

    def test_packagesInstalled(self):
        """
        setup.cfg lists every package of gossip, so that an install (not
        only a checkout) holds all of them.
        """
        from configparser import ConfigParser

        config = ConfigParser()
        config.read(os.path.join(ROOT, "setup.cfg"))
        listed = set(config["options"]["packages"].split())
        packages = {
            os.path.relpath(directory, ROOT).replace(os.sep, ".")
            for directory, _, files in os.walk(PACKAGE)
            if "__init__.py" in files
        }
        self.assertEqual(packages - listed, set())


# Run in a fresh interpreter: import what the command line's fast paths
# import, run them, and print which modules of interest each step had
# loaded, that the interpreter had not loaded before gossip was imported.
_CHILD = """
import os, sys
started = set(sys.modules)
loaded = lambda: sorted(
    name for name in set(sys.modules) - started if name.split(".")[0] in WATCHED
)
steps = {}
import gossip.store.format, gossip.store.intervals, gossip.store.logfile, gossip.store.query
# What gossip sync and clone import before they start the peer command.
import gossip.transport.spawn
import gossip.cli.main
steps["import"] = loaded()
log = sys.argv[1]
out = os.dup(1)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
for step, argv in STEPS:
    status = gossip.cli.main.main(argv)
    steps[step] = [status, loaded()]
import json
os.write(out, json.dumps(steps).encode("ascii"))
"""

# The fast paths, as scripts call them.
_STEPS = [
    ("say", ["say", "{log}", "greeting=hello", "to=world"]),
    ("say --file", ["say", "--fsync", "-v", "{log}", "a=b", "--file", "c={log}"]),
    ("ask", ["ask", "{log}", "greeting"]),
    ("ask --format json", ["ask", "--format", "json", "{log}", "to=world"]),
    ("ask --last", ["ask", "--last=1", "--format=raw", "{log}"]),
]


class StartUpTests(TestCase):
    """
    C{gossip say} and C{gossip ask} load only what they need.
    """

    def loadedBy(self, watched, site=True):
        """
        Run the fast paths in a new interpreter, on a log that exists (the
        first add to a new log also checks the identity add it writes).

        @param site: whether the interpreter imports L{site}, which adds
            the installed packages (Twisted among them) and runs their
            C{.pth} files, which may import modules gossip need not.

        @return: for the imports and each step, the modules loaded so far
            of the top-level packages in C{watched}, after an exit status
            for a step.
        """
        log = os.path.abspath(self.mktemp())
        Log(log).say([(b"created", b"here")])
        steps = [(name, [arg.format(log=log) for arg in argv]) for name, argv in _STEPS]
        code = f"WATCHED = {set(watched)!r}\nSTEPS = {steps!r}\n" + _CHILD
        done = subprocess.run(
            [sys.executable, *([] if site else ["-S"]), "-c", code, log],
            capture_output=True,
            env=dict(os.environ, PYTHONPATH=ROOT),
            timeout=60,
        )
        self.assertEqual((done.returncode, done.stderr), (0, b""))
        return json.loads(done.stdout)

    def test_noTwisted(self):
        """
        Importing the store and the command line, and running say and ask,
        load nothing from Twisted, zope.interface, attrs, cryptography or
        pyOpenSSL.
        """
        loaded = self.loadedBy(SLOW)
        self.assertEqual(loaded.pop("import"), [])
        self.assertEqual(loaded, {name: [0, []] for name, argv in _STEPS})

    def test_noArgparse(self):
        """
        say and ask, given arguments in the forms scripts use, do not import
        argparse, whose import and parser take longer than say itself.
        """
        loaded = self.loadedBy({"argparse"}, site=False)
        self.assertEqual(loaded.pop("import"), [])
        self.assertEqual(loaded, {name: [0, []] for name, argv in _STEPS})

    def test_noRegularExpressions(self):
        """
        With the C module, say and ask (but for C{--format json}, whose
        json imports it) do not import re, which takes half as long as
        Python takes to start.
        """
        if format.speedups is None:
            raise SkipTest("gossip.store._speedups is not built or is turned off")
        loaded = self.loadedBy({"re"}, site=False)
        self.assertEqual(
            [loaded[step] for step in ("import", "say", "say --file", "ask")],
            [[], [0, []], [0, []], [0, []]],
        )

    def test_script(self):
        """
        bin/gossip, the script installed as the C{gossip} command, runs it.
        """
        log = self.mktemp()
        script = os.path.join(ROOT, "bin", "gossip")
        env = dict(os.environ, PYTHONPATH=ROOT)
        for argv in [["say", log, "a=b"], ["ask", "--format", "raw", log, "a"]]:
            done = subprocess.run(
                [sys.executable, script, *argv], capture_output=True, env=env, timeout=60
            )
            self.assertEqual((done.returncode, done.stderr), (0, b""))
        self.assertEqual(format.decodeLine(done.stdout)[1:], [(b"at", b"0"), (b"a", b"b")])


# Words to build command lines from: the fast commands' options, some
# abbreviated or misspelled, values good and bad, and things argparse
# treats specially.
_WORDS = [
    "say", "ask", "chat", "sync", "--fsync", "--fs", "--file", "--file=a=b", "--file=",
    "-v", "--verbose", "--verb", "-vv", "-f", "--follow", "--format", "--format=json",
    "--format=raw", "--form", "--last", "--last=2", "--last=x", "--last= 3", "json",
    "text", "xml", "3", "-1", " -1", "x", "a=b", "=b", "", "-", "--", "-h", "--help",
    "--version", "--fsync=1", "--nope", "log", "nick",
]


class QuickOptionsTests(TestCase):
    """
    L{main._quickOptions}, which parses say, ask and chat without argparse,
    agrees with the full parser wherever it parses at all.
    """

    def assertAgree(self, argv):
        quick = main._quickOptions(argv)
        if quick is None:
            return False
        self.assertEqual(vars(quick), vars(main._parser().parse_args(argv)), argv)
        return True

    def test_plain(self):
        """
        The forms scripts use are parsed quickly, as argparse parses them.
        """
        for argv in [
            ["say", "log", "a=b", "c=d"],
            ["say", "--fsync", "log", "-v", "a=b", "--file", "c=path", "--file=d=-"],
            ["say", "log"],
            ["ask", "log"],
            ["ask", "log", "--last", "5", "name", "-f", "--format", "json", "a=b"],
            ["ask", "--last=0", "--format=raw", "--follow", "log"],
            ["chat", "log"],
            ["chat", "log", "nick"],
        ]:
            self.assertTrue(self.assertAgree(argv), argv)

    def test_others(self):
        """
        Anything else is left to argparse: help, versions, other commands,
        abbreviations, C{--}, mistakes.
        """
        for argv in [
            [],
            ["--version"],
            ["say", "-h"],
            ["say", "--fs", "log"],
            ["say"],
            ["say", "log", "--", "-a=b"],
            ["say", "--file", "-", "log"],
            ["ask", "--last", "-1", "log"],
            ["ask", "--last", "many", "log"],
            ["ask", "--format", "xml", "log"],
            ["ask", "-f=1", "log"],
            ["chat", "log", "nick", "extra"],
            ["sync", "log", "peer"],
        ]:
            self.assertIs(main._quickOptions(argv), None, argv)

    @settings(max_examples=500, deadline=None)
    @given(st.lists(st.sampled_from(_WORDS), max_size=7))
    def test_agree(self, argv):
        """
        On any command line, the quick parser gives up or agrees with
        argparse.
        """
        self.assertAgree(argv)
