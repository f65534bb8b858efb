"""Text from outside that the database cannot store: NUL characters and lone surrogates.

PostgreSQL text cannot hold NUL (U+0000); a lone surrogate (U+D800 to U+DFFF, which JSON's
``\\ud800`` escapes, or undecodable command-line bytes, can put in a Python str) cannot be
encoded as UTF-8 at all. SQLite stores both, so code that works there fails on PostgreSQL.

Two ways to meet such text, one each:

- what Google sends is stored without them: `storable` cleans one value and `storable_tree`
  a whole event (roombridge/mirror.py, where Google events become reservations);
- what a person, a script or a push sends is refused at its boundary with the answer that
  boundary documents: `unstorable_fields` names the fields that hold such text
  (webapp: the API's 422 and the pages' field errors, the CLI's usage error; webhooks: 400).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"
MESSAGE = "Must not contain NUL characters or lone surrogates."


def is_storable(text: str) -> bool:
    return _UNSTORABLE.search(text) is None


def storable(text: str) -> str:
    """`text` without NUL characters, each lone surrogate replaced by U+FFFD."""
    if is_storable(text):
        return text
    return _UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else REPLACEMENT, text)


def storable_tree(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings) with `storable` applied to every string, keys too."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable_tree(k): storable_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_tree(v) for v in value]
    return value


def _holds_unstorable(value: Any) -> bool:
    if isinstance(value, str):
        return not is_storable(value)
    if isinstance(value, Mapping):
        return any(_holds_unstorable(k) or _holds_unstorable(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_unstorable(v) for v in value)
    return False


def unstorable_fields(items: Iterable[tuple[Any, Any]]) -> list[str]:
    """The names (cleaned for showing) of the (name, value) pairs whose name or value, however
    deeply nested, holds text the database cannot store; in their order, each once."""
    names: list[str] = []
    for name, value in items:
        if _holds_unstorable(name) or _holds_unstorable(value):
            shown = storable(str(name))
            if shown not in names:
                names.append(shown)
    return names
