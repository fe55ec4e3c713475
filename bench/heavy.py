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
