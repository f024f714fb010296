"""Strict YAML loading that remembers where every value came from.

Settings, the directory and policies are files that IT admins edit by hand, so
every problem must be reported as ``FILE:LINE: message``. PyYAML's composer
gives us nodes with their positions; we build plain Python values from them,
keeping the line of every mapping key and list item, and refusing duplicate
keys (PyYAML silently keeps the last one, which hides typos).

Composing uses libyaml (``yaml.CSafeLoader``) when PyYAML was built with it:
a province's directory has tens of thousands of entries and the pure-Python
composer is several times slower. libyaml words its syntax errors differently,
so on an error we compose again with the pure-Python loader and report its
message: the output is the same whichever loader is installed.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable

import yaml

# Immutable class references, chosen once: the fast composer if present.
_FAST_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"


@dataclasses.dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong in an input file, printed as ``FILE:LINE: message``."""

    file: str
    line: int
    message: str
    warning: bool = False

    def __str__(self) -> str:
        prefix = "warning: " if self.warning else ""
        return f"{self.file}:{self.line}: {prefix}{self.message}"


class ConfigError(Exception):
    """Raised when an input file has problems; carries all of them, not just the first."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class YMap(dict):  # type: ignore[type-arg]
    """A mapping read from YAML, with the file and line of itself and of each key."""

    file: str
    line: int
    key_lines: dict[Any, int]

    def line_of(self, key: Any) -> int:
        """The line of ``key`` if present, else the line of the mapping."""
        return self.key_lines.get(key, self.line)


class YList(list):  # type: ignore[type-arg]
    """A sequence read from YAML, with the file and line of itself and of each item."""

    file: str
    line: int
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


class _Builder:
    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []
        self._scalars = yaml.SafeLoader("")

    def build(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            # Most values are plain strings; skip the constructor's bookkeeping for them.
            if node.tag == _STR_TAG:
                return node.value
            try:
                return self._scalars.construct_object(node, deep=True)
            except (ValueError, OverflowError, yaml.YAMLError) as e:
                # A value that looks like a date or a number but is none (2026-13-31): said at its line,
                # and kept as the text it is, so the checks after this one still run.
                kind = node.tag.rpartition(":")[2] or "value"
                self.problems.append(Problem(self.file, node.start_mark.line + 1,
                                             f"{node.value!r} is not a valid {kind}: {e}"))
                return node.value
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            self._scalars.flatten_mapping(node)  # merge keys (<<) like safe_load does
            out = YMap()
            out.file, out.line, out.key_lines = self.file, line, {}
            for key_node, value_node in node.value:
                key = self.build(key_node)
                key_line = key_node.start_mark.line + 1
                try:
                    hash(key)
                except TypeError:
                    self.problems.append(Problem(self.file, key_line, "a key must be a plain value"))
                    continue
                if key in out:
                    self.problems.append(
                        Problem(
                            self.file,
                            key_line,
                            f"duplicate key {key!r} (first at line {out.key_lines[key]})",
                        )
                    )
                    continue
                out[key] = self.build(value_node)
                out.key_lines[key] = key_line
            return out
        if isinstance(node, yaml.SequenceNode):
            seq = YList()
            seq.file, seq.line, seq.item_lines = self.file, line, []
            for item in node.value:
                seq.append(self.build(item))
                seq.item_lines.append(item.start_mark.line + 1)
            return seq
        return self._scalars.construct_object(node, deep=True)


def load(path: str | os.PathLike[str]) -> Any:
    """Load one YAML document from ``path``; raise ConfigError naming file and line."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError([Problem(name, 0, f"cannot read: {e.strerror}")]) from None
    return loads(text, name)


def loads(text: bytes | str, name: str = "<string>") -> Any:
    """Load one YAML document from text; ``name`` is used in error messages."""
    try:
        node = yaml.compose(text, Loader=_FAST_LOADER)
    except yaml.YAMLError:
        node = _compose_slowly(text, name)
    if node is None:
        return None
    builder = _Builder(name)
    try:
        value = builder.build(node)
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        raise ConfigError([Problem(name, mark.line + 1 if mark else 0, str(e.problem))]) from None
    if builder.problems:
        raise ConfigError(builder.problems)
    return value


def _compose_slowly(text: bytes | str, name: str) -> yaml.Node | None:
    """Compose with the pure-Python loader, whose error messages are the reference."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 0
        raise ConfigError([Problem(name, line, f"YAML syntax: {e.problem or e}")]) from None
    except yaml.YAMLError as e:
        raise ConfigError([Problem(name, 0, f"YAML syntax: {e}")]) from None


class Checker:
    """Collects problems while a loader reads a YAML tree against its schema.

    A loader reads what it can, records every problem, and raises once at the
    end, so an admin sees all mistakes in one run of ``mailgw check``.
    """

    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []

    def error(self, where: YMap | YList | None, key: Any, message: str) -> None:
        self.problems.append(Problem(self.file, _line(where, key), message))

    def warn(self, where: YMap | YList | None, key: Any, message: str) -> None:
        self.problems.append(Problem(self.file, _line(where, key), message, warning=True))

    def mapping(self, value: Any, where: YMap | YList | None, key: Any, what: str) -> YMap | None:
        """``value`` if it is a mapping, else record an error and return None."""
        if isinstance(value, YMap):
            return value
        self.error(where, key, f"{what} must be a mapping, not {_kind(value)}")
        return None

    def keys(self, m: YMap, allowed: Iterable[str], required: Iterable[str] = (), what: str = "") -> None:
        """Report keys of ``m`` that are not allowed and required ones that are missing."""
        allowed = set(allowed) | set(required)
        for key in m:
            if key not in allowed:
                hint = f" in {what}" if what else ""
                self.error(m, key, f"unknown key {key!r}{hint} (allowed: {', '.join(sorted(allowed))})")
        for key in required:
            if key not in m:
                hint = f" in {what}" if what else ""
                self.error(m, None, f"missing key {key!r}{hint}")

    def typed(self, m: YMap, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        """``m[key]`` if it has the expected type (bool is never an int here), else ``default``."""
        if key not in m:
            return default
        value = m[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds)
        if not ok:
            names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            self.error(m, key, f"{key!r} must be {names}, not {_kind(value)}")
            return default
        return value

    def raise_if_errors(self) -> None:
        if any(not p.warning for p in self.problems):
            raise ConfigError(self.problems)


_TYPE_NAMES = {str: "a string", int: "a number", float: "a number", bool: "true or false", YMap: "a mapping", YList: "a list", list: "a list", dict: "a mapping"}


def kind_of(value: Any) -> str:
    """How an error message names the type of a value an admin wrote ("a string", "a list" ...)."""
    if value is None:
        return "empty"
    for k, name in _TYPE_NAMES.items():
        if isinstance(value, bool):
            return "true or false"
        if isinstance(value, k):
            return name
    return type(value).__name__


_kind = kind_of


def _line(where: YMap | YList | None, key: Any) -> int:
    if where is None:
        return 0
    if key is None:
        return where.line
    return where.line_of(key)
