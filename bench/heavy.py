"""Heavy trigger files: what a committer can legally write within MAX_SPEC_BYTES, in four shapes that
cost the most to read (the issue's corpus), for the heavy-corpus benchmark."""

from __future__ import annotations

from pathlib import Path

SIZE = 256 * 1024 - 64
"""Just under the catalog's MAX_SPEC_BYTES, which refuses larger files unread."""


def _fill(head: str, item: str, tail: str = "") -> str:
    count = (SIZE - len(head) - len(tail)) // len(item)
    return head + item * count + tail


SHAPES = {
    "flow-list": lambda i: _fill(f"job: bench-p\nparameters: {{N: 'h{i}'}}\nlist: [", "1,", "1]\n"),
    "many-keys": lambda i: "job: bench-p\n" + "".join(f"k{n:06}: {i}\n" for n in range(SIZE // 12)),
    "parameters": lambda i: "job: bench-p\nparameters:\n" + "".join(f"  P{n:06}: v{i}\n" for n in range(SIZE // 14)),
    "nested-flow": lambda i: _fill(f"job: bench-p\nparameters: [{i},", "{a: [b, {c: d}]},", "x]\n"),
}


def write_heavy(directory: Path, count: int, prefix: str = "heavy", generation: int = 0) -> list[Path]:
    """`count` heavy files, the four shapes in turn, each just under the size limit; a later
    `generation` rewrites the first `count` of them with other bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    names = list(SHAPES)
    out = []
    for i in range(count):
        shape = names[i % len(names)]
        path = directory / f"{prefix}-{shape}-{i:03}.yaml"
        path.write_text(SHAPES[shape](i + 1000 * generation)[:SIZE])
        out.append(path)
    return out


ODD = {
    "oversized": lambda i: "job: bench-p\n# " + "x" * (SIZE + 4096) + "\n",  # over the limit: refused unread
    "deep-flow": lambda i: "job: bench-p\nx: " + "[" * 20000 + "]" * 20000 + "\n",
    "deep-block": lambda i: "job: bench-p\nx:\n" + "".join(" " * d + "- \n" for d in range(700)),
    "laughs": lambda i: "job: bench-p\na: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
    "long-line": lambda i: "job: bench-p\ncause: '" + "y" * (SIZE - 40) + "'\n",
    "binary": lambda i: bytes(range(256)).decode("latin-1") * 64,
    "bad-utf8": lambda i: "job: bench-p\ncause: \udcff\n",
    "tabs": lambda i: "job: bench-p\n\tparameters: {A: 1}\n",
    "empty": lambda i: "",
    "many-docs": lambda i: "---\njob: bench-p\n" * 5000,
}
"""Odd files a committer may write: over the size limit, nested past any sensible depth, an alias bomb,
one long line, bytes that are not text, invalid UTF-8, a tab where YAML forbids it, nothing, many
documents in one file."""


def write_hostile(directory: Path, files: int, folders: int, heavy: int = 40) -> dict[str, int]:
    """A tree of `folders` folders (most empty, some a hundred deep) holding `files` files: `heavy`
    heavy ones (the four shapes), the odd ones above in turn (one in ten files), ordinary specs for the
    rest, scattered. Returns how many of each were written."""
    directory.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    chain = directory
    for depth in range(100):  # one folder a hundred deep
        chain = chain / f"d{depth}"
        made.append(chain)
    width = max(1, (folders - len(made)) // 100)
    for top in range(100):
        for sub in range(width):
            made.append(directory / f"f{top:02}" / f"s{sub:03}")
    for folder in made:
        folder.mkdir(parents=True, exist_ok=True)
    counts = {"folders": sum(1 for _ in directory.rglob("*")), "heavy": 0, "odd": 0, "ordinary": 0}
    odd = list(ODD)
    for i in range(files):
        folder = made[(i * 7919) % len(made)]
        if i < heavy:
            shape = list(SHAPES)[i % len(SHAPES)]
            text, kind = SHAPES[shape](i)[:SIZE], "heavy"
        elif i % 10 == 0:
            text, kind = ODD[odd[(i // 10) % len(odd)]](i), "odd"
        else:
            text, kind = f"job: bench-p\nparameters: {{N: 'x{i}'}}\n", "ordinary"
        (folder / f"{kind}-{i:05}.yaml").write_bytes(text.encode("utf-8", "surrogateescape"))
        counts[kind] += 1
    return counts
