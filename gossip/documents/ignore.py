# -*- test-case-name: tests.test_documents -*-
"""
Which files of a folder are not documents: version control, editors'
swap and backup files, gossip's own temporary files, and whatever the
folder's C{.gossipignore} lists, in gitignore's syntax (a subset: globs
with C{*}, C{?}, C{[...]} and C{**}, C{dir/} for directories only, C{!} to
take a name back, a leading or inner C{/} to anchor a pattern at the top).
"""

import re

__all__ = ["BUILTIN", "IGNOREFILE", "Ignore"]

IGNOREFILE = ".gossipignore"

# Never documents, whatever .gossipignore says.
BUILTIN = (".git/", ".*.swp", ".*.swx", "*~", ".#*", "4913", ".*.gossip-tmp-*")


def _translate(glob):
    """
    A gitignore glob (without its anchoring or trailing slash) as a
    regular expression matching a whole C{/}-separated path.
    """
    out = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("/.*")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = glob.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = glob[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end + 1
        elif c == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


class Ignore:
    """
    The rules of one folder: L{ignored} says whether a path is not a
    document.
    """

    def __init__(self, lines=()):
        self._rules = []
        for line in list(BUILTIN) + list(lines):
            self._add(line)
        self._builtin = len(BUILTIN)

    @classmethod
    def fromFile(cls, path):
        """
        The built-in rules and those of the ignore file at C{path}, if
        there is one.
        """
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return cls(f.read().splitlines())
        except OSError:
            return cls()

    def _add(self, line):
        line = line.rstrip("\n")
        if line.endswith("\\ "):
            line = line[:-2].rstrip(" ") + " "
        else:
            line = line.rstrip(" ")
        if not line or line.startswith("#"):
            return
        negated = line.startswith("!")
        if negated:
            line = line[1:]
        directoryOnly = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            return
        anchored = "/" in line
        line = line.lstrip("/")
        pattern = _translate(line)
        if not anchored:
            pattern = "(?:.*/)?" + pattern
        self._rules.append((re.compile(pattern + r"\Z", re.DOTALL), negated, directoryOnly))

    def ignored(self, path, isDirectory=False):
        """
        Whether C{path} (C{/}-separated, relative to the folder) is not a
        document, or (with C{isDirectory}) a directory not to look in.
        The caller looks in no directory that is ignored, so, as in git, a
        file cannot be taken back from an ignored directory.
        """
        verdict = False
        for index, (rule, negated, directoryOnly) in enumerate(self._rules):
            if directoryOnly and not isDirectory:
                continue
            if verdict == (not negated):
                continue
            if rule.match(path):
                if index < self._builtin:
                    return True
                verdict = not negated
        return verdict

    def ignoredAnywhere(self, path):
        """
        Whether C{path}, a file, or any directory it is in is ignored.
        """
        parts = path.split("/")
        for i in range(1, len(parts)):
            if self.ignored("/".join(parts[:i]), isDirectory=True):
                return True
        return self.ignored(path)
