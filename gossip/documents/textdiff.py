# -*- test-case-name: tests.test_documents -*-
"""
The difference between two texts as edits a CRDT text can apply: which
stretches of the old text to remove and what to insert in their place.

The standard library's difflib does it, a line at a time and then a
character at a time inside the lines that changed: measured against the
C++ diff-match-patch of C{fast-diff-match-patch} (bench/bench_diff.py,
figures in docs/documents.md) it takes a few milliseconds on a 50 KB
document, which a save does not notice, and needs no compiled dependency.
"""

from difflib import SequenceMatcher

__all__ = ["diff", "difflibEdits", "utf8Edits"]

# Replaced lines are diffed a character at a time below this many
# characters (old and new together); a larger block is replaced whole,
# since SequenceMatcher's time grows with the product of the lengths.
_FINE = 8192

def _commonPrefix(a, b):
    """
    The length of the longest common prefix of C{a} and C{b}, found by
    halving: slices compare in C, so this is fast on long texts.
    """
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _commonSuffix(a, b, limit):
    low, high = 0, min(len(a), len(b), limit)
    while low < high:
        middle = (low + high + 1) // 2
        if a[len(a) - middle : len(a) - low] == b[len(b) - middle : len(b) - low]:
            low = middle
        else:
            high = middle - 1
    return low


def difflibEdits(old, new):
    """
    The edits that turn C{old} into C{new}, found with difflib.

    @return: a list of C{(start, end, inserted)}, positions in characters
        of C{old}, in ascending order and not overlapping.
    """
    prefix = _commonPrefix(old, new)
    suffix = _commonSuffix(old, new, min(len(old), len(new)) - prefix)
    a = old[prefix : len(old) - suffix]
    b = new[prefix : len(new) - suffix]
    if not a or not b:
        return [(prefix, prefix + len(a), b)] if a or b else []
    aLines = a.splitlines(keepends=True)
    bLines = b.splitlines(keepends=True)
    starts = [0]
    for line in aLines:
        starts.append(starts[-1] + len(line))
    edits = []
    matcher = SequenceMatcher(None, aLines, bLines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        removed = a[starts[i1] : starts[i2]]
        added = "".join(bLines[j1:j2])
        start = prefix + starts[i1]
        if tag == "replace" and len(removed) + len(added) <= _FINE:
            edits.extend(_fine(start, removed, added))
        elif tag == "replace" and i2 - i1 == j2 - j1:
            # As many lines on both sides (every line edited, say): pair them.
            for i, j in zip(range(i1, i2), range(j1, j2)):
                edits.extend(_fine(prefix + starts[i], aLines[i], bLines[j]))
        else:
            edits.append((start, start + len(removed), added))
    return edits


def _fine(start, removed, added):
    """
    The edits that turn C{removed}, at C{start}, into C{added}, a
    character at a time if they are short enough.
    """
    if len(removed) + len(added) > _FINE:
        return [(start, start + len(removed), added)]
    matcher = SequenceMatcher(None, removed, added, autojunk=False)
    return [
        (start + k1, start + k2, added[l1:l2])
        for tag, k1, k2, l1, l2 in matcher.get_opcodes()
        if tag != "equal"
    ]


diff = difflibEdits


def utf8Edits(old, edits):
    """
    C{edits} of C{old}, positions in characters, as positions in UTF-8
    bytes, which is how pycrdt's C{Text} counts.

    @return: a list of C{(start, end, inserted)}, in ascending order.
    """
    converted = []
    character = 0
    byte = 0
    for start, end, text in edits:
        byte += len(old[character:start].encode("utf-8", "surrogatepass"))
        removed = len(old[start:end].encode("utf-8", "surrogatepass"))
        converted.append((byte, byte + removed, text))
        byte += removed
        character = end
    return converted
