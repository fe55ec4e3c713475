"""Where a value is in a YAML file, and what kind it is in YAML's words: shared by the trigger specs and
the operator's config, so both report a problem at the same `file:line:col` and in the same terms."""

from __future__ import annotations

from typing import Any


def position(tree: Any, loc: tuple[Any, ...], *, key: bool) -> tuple[int, int]:
    """Line and column (from 1) of `loc` in a round-trip tree: of its key, or with `key=False` its value (a
    list's item by its index); as far as the tree goes where `loc` leaves it (a missing key: its mapping),
    the top where it has none."""
    node, line, col = tree, 1, 1
    for i, part in enumerate(loc):
        lc = getattr(node, "lc", None)
        if lc is not None and isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            line, col = lc.item(part)  # a list's item: the position of its value
        elif lc is None or not isinstance(node, dict) or part not in node:
            break
        else:
            line, col = lc.key(part) if (key and i == len(loc) - 1) else lc.value(part)
        line, col = line + 1, col + 1
        node = node[part]
    return line, col


def yaml_type(value: Any) -> str:
    """A value's kind in YAML's words (bool before int: a bool is an int in Python)."""
    names = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
             (bytes, "binary data"), (list, "a list"), (dict, "a mapping"), (set, "a set"), (type(None), "null"))
    return next((name for kind, name in names if isinstance(value, kind)), "a value of another kind")
