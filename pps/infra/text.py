"""Characters that hide or reorder what a person reads are refused where text enters the safe-room.

A name such as ``"Bank\\u202eA"`` shows to a person as something else than it is (a right-to-left override
reverses what follows), ``"\\x00"`` truncates it in C libraries and terminals, and ANSI escapes rewrite a
terminal. PPS refuses them instead of escaping them at every place text is shown (pages, the CLI, reports,
CSV exports, the ledger's JSON):

* **text** (every string of every JSON body, text cells of an upload, free-text reasons): no NUL or other
  C0 control except tab, line feed and carriage return, no DEL or C1 control, no bidirectional embedding,
  override or isolate (U+202A-U+202E, U+2066-U+2069);
* **names** (organisations, datasets, models, federations, trainings): the same, and also no tab or line
  break, no bidirectional mark (U+200E, U+200F, U+061C), and no leading or trailing space.

Everything else of Unicode is allowed: Chinese and Tibetan names, right-to-left scripts written as they are,
zero-width joiners that scripts need.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

from pps.errors import UnsafeText

__all__ = ["check_name", "check_text", "find_unsafe", "first_unsafe_in"]

_UNSAFE_TEXT: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_NAME: Final = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _describe(ch: str) -> str:
    names = {
        "\x00": "NUL",
        "\t": "a tab",
        "\n": "a line feed",
        "\r": "a carriage return",
        "\x1b": "ESC (a terminal escape)",
        "\u202e": "RIGHT-TO-LEFT OVERRIDE",
        "\u202d": "LEFT-TO-RIGHT OVERRIDE",
        "\u2066": "LEFT-TO-RIGHT ISOLATE",
        "\u2067": "RIGHT-TO-LEFT ISOLATE",
        "\u2068": "FIRST STRONG ISOLATE",
        "\u2069": "POP DIRECTIONAL ISOLATE",
        "\u202c": "POP DIRECTIONAL FORMATTING",
        "\u202a": "LEFT-TO-RIGHT EMBEDDING",
        "\u202b": "RIGHT-TO-LEFT EMBEDDING",
    }
    kind = names.get(ch, "a control or bidirectional formatting character")
    return f"{kind} (U+{ord(ch):04X})"


def find_unsafe(value: str, *, name: bool = False) -> str | None:
    """What is wrong with ``value`` as text (``name=False``) or as a name, or None if nothing."""
    found = (_UNSAFE_NAME if name else _UNSAFE_TEXT).search(value)
    if found is not None:
        return f"holds {_describe(found.group())} at character {found.start() + 1}"
    if name and value != value.strip():
        return "starts or ends with white space"
    return None


def check_text(value: str, field: str) -> str:
    """``value`` if it is safe text; else raise :class:`~pps.errors.UnsafeText` naming ``field``."""
    problem = find_unsafe(value)
    if problem is not None:
        raise UnsafeText(f"{field} {problem}; such characters are refused", details={"field": field})
    return value


def check_name(value: str, field: str = "name") -> str:
    """``value`` if it is a safe name; else raise :class:`~pps.errors.UnsafeText` naming ``field``."""
    problem = find_unsafe(value, name=True)
    if problem is not None:
        raise UnsafeText(
            f"{field} {problem}; names may not hold control characters, line breaks or bidirectional "
            "formatting characters",
            details={"field": field},
        )
    return value


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            for key, sub in item.items():
                yield f"{where} (a key)", key
                stack.append((sub, f"{where}.{key}"))
        elif isinstance(item, list):
            stack.extend((sub, f"{where}[{i}]") for i, sub in enumerate(item))


def first_unsafe_in(document: Any, root: str = "body") -> UnsafeText | None:
    """The error for the first unsafe string (value or key) of a parsed JSON document, or None."""
    for where, text in _strings(document, root):
        if _UNSAFE_TEXT.search(text) is not None:
            try:
                check_text(text, where)
            except UnsafeText as exc:
                return exc
    return None
