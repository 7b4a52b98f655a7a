"""
gossip.documents.textdiff's difflib differ against fast-diff-match-patch
(if installed) on a 50 KB document with a few edits, and with every line
changed: the time each takes, and how many edits it finds.

    python bench/bench_diff.py [--runs N]
"""

import argparse
import random
import time

from gossip.documents import textdiff

try:
    import fast_diff_match_patch
except ImportError:
    fast_diff_match_patch = None


def matchPatchEdits(old, new):
    """
    The edits that turn C{old} into C{new}, found with diff-match-patch,
    as L{textdiff.difflibEdits} gives them.
    """
    edits = []
    position = 0
    inserted = 0
    for op, length in fast_diff_match_patch.diff(old, new, counts_only=True, cleanup="Semantic"):
        if op == "=":
            position += length
            inserted += length
        elif op == "-":
            if edits and edits[-1][1] == position:
                start, end, text = edits[-1]
                edits[-1] = (start, position + length, text)
            else:
                edits.append((position, position + length, ""))
            position += length
        else:
            text = new[inserted : inserted + length]
            inserted += length
            if edits and edits[-1][1] == position:
                start, end, before = edits[-1]
                edits[-1] = (start, end, before + text)
            else:
                edits.append((position, position, text))
    return edits


def document(size, rng):
    words = ["gossip", "log", "add", "naïve", "☃", "merge", "text", "line", "😀", "the", "a"]
    lines = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 14))) + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines)


def edited(text, rng, count):
    for _ in range(count):
        i = rng.randrange(len(text))
        kind = rng.choice(["insert", "delete", "replace"])
        if kind == "insert":
            text = text[:i] + "inserted words here " + text[i:]
        elif kind == "delete":
            text = text[:i] + text[i + rng.randint(1, 40) :]
        else:
            text = text[:i] + "REPLACED" + text[i + 8 :]
    return text


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--size", type=int, default=50_000)
    args = parser.parse_args()
    rng = random.Random(13)
    old = document(args.size, rng)
    cases = [(f"{n:3d} edits", edited(old, rng, n)) for n in (1, 5, 20)]
    cases.append(("every line", old.replace("\n", ".\n")))
    differs = [("difflib", textdiff.difflibEdits)]
    if fast_diff_match_patch is not None:
        differs.append(("diff-match-patch", matchPatchEdits))
    print(f"document: {len(old)} characters, {len(old.encode())} bytes")
    for edits, new in cases:
        for name, differ in differs:
            times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                found = differ(old, new)
                times.append(time.perf_counter() - started)
            times.sort()
            changed = sum(end - start + len(text) for start, end, text in found)
            print(
                f"{edits}  {name:17s} median {times[len(times) // 2] * 1000:7.2f} ms"
                f"  max {times[-1] * 1000:7.2f} ms  {len(found):3d} edits found,"
                f" {changed} characters touched"
            )


if __name__ == "__main__":
    main()
