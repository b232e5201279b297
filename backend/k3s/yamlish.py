"""Reads the flat YAML that K3s config files are: top-level keys with scalars or lists.

K3s accepts nothing else (pkg/configfilearg: "nested maps are not supported"), so a small
reader is enough, keeps PyYAML out of the product's dependencies, and refuses what it does not
understand instead of guessing. Used by the driver to re-check an existing config.yaml and by
the stand-in `k3s` to read the files the driver wrote.
"""

from __future__ import annotations

import json
import re

_KEY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*\+?):(?:\s+(.*))?$")
_ITEM = re.compile(r"^\s+-\s+(.*)$|^-\s+(.*)$")


class YamlError(ValueError):
    """Text that is not a flat K3s config; the message names the line."""


def _strip_comment(text: str) -> str:
    # A '#' starts a comment only outside quotes and after whitespace.
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text.rstrip()


def _scalar(text: str, lineno: int) -> object:
    text = text.strip()
    if text.startswith('"'):
        try:
            value: object = json.loads(text)
        except json.JSONDecodeError:
            raise YamlError(f"line {lineno}: bad double-quoted string {text}") from None
        return value
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise YamlError(f"line {lineno}: bad single-quoted string {text}")
        return text[1:-1].replace("''", "'")
    if text.startswith(("{", "&", "*", "!", "|", ">")):
        raise YamlError(f"line {lineno}: not a flat K3s config value: {text}")
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    return text


def _flow_list(text: str, lineno: int) -> list[object]:
    inner = text.strip()[1:-1].strip()
    if not inner:
        return []
    return [_scalar(part, lineno) for part in inner.split(",")]


def load_flat(text: str) -> dict[str, object]:
    """Parse a K3s config file into {key: scalar | list of scalars}."""
    out: dict[str, object] = {}
    current: str | None = None  # key whose block list is being read
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not line.strip() or line.strip() == "---":
            continue
        item = _ITEM.match(line)
        if item and current is not None:
            lst = out[current]
            assert isinstance(lst, list)
            lst.append(_scalar(item.group(1) or item.group(2) or "", lineno))
            continue
        if line[0].isspace():
            raise YamlError(f"line {lineno}: nested values are not supported: {raw.strip()}")
        m = _KEY.match(line)
        if m is None:
            raise YamlError(f"line {lineno}: expected 'key: value': {raw.strip()}")
        key, value = m.group(1), (m.group(2) or "").strip()
        if key in out:
            raise YamlError(f"line {lineno}: key {key!r} appears twice")
        current = None
        if not value:
            out[key] = []
            current = key
        elif value.startswith("[") and value.endswith("]"):
            out[key] = _flow_list(value, lineno)
        else:
            out[key] = _scalar(value, lineno)
    return out
