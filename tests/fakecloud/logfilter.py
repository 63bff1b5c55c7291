"""The part of the Logging query language the fake Cloud Logging understands.

Google's grammar (cloud.google.com/logging/docs/view/logging-query-language): comparisons
``PATH OP VALUE`` with ``= != > < >= <= :`` (``:`` is "has", a case-insensitive substring match),
combined with ``AND``, ``OR``, ``NOT`` (also a leading ``-``), parentheses, and juxtaposition
(two comparisons side by side, or on separate lines, mean AND). NOT binds tightest, then OR,
then AND: ``a OR b AND c`` is ``(a OR b) AND c``, the reverse of most languages. Severity compares
by rank (``severity>=WARNING`` includes ERROR), timestamps as instants, numbers as numbers.

Anything else (global restrictions without a field, regular expressions ``=~``, functions, value
lists) is refused with INVALID_ARGUMENT rather than guessed, so a query the fake does not really
evaluate can never pass a test by matching everything.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from google.logging.type import log_severity_pb2

Predicate = Callable[[dict[str, Any]], bool]

SEVERITY_RANK = dict(log_severity_pb2.LogSeverity.items())
MAX_FILTER_CHARS = 20_000  # "Length of a Logging query language query" (logging/quotas)

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<op>>=|<=|!=|=~|!~|=|>|<|:)
    | (?P<paren>[()])
    | (?P<word>[^\s()=<>!:~"]+)
    )""", re.VERBOSE)


class FilterError(ValueError):
    """The filter cannot be parsed (the fake answers INVALID_ARGUMENT with this message)."""


def compile_filter(text: str) -> Predicate:
    """A predicate over a LogEntry in its JSON form (``MessageToDict``, camelCase)."""
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"The filter is longer than {MAX_FILTER_CHARS} characters.")
    tokens = _tokenize(text)
    if not tokens:
        return lambda entry: True
    parser = _Parser(tokens)
    predicate = parser.conjunction()
    if parser.pos != len(tokens):
        raise FilterError(f"Unparseable filter: unexpected {tokens[parser.pos][1]!r}")
    return predicate


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise FilterError(f"Unparseable filter: {text[pos:pos + 20]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise FilterError("Unparseable filter: unexpected end")
        self.pos += 1
        return token

    def conjunction(self) -> Predicate:
        parts = [self.disjunction()]
        while (token := self._peek()) is not None and token != ("paren", ")"):
            if token == ("word", "AND"):
                self.pos += 1
            parts.append(self.disjunction())
        return lambda entry: all(p(entry) for p in parts)

    def disjunction(self) -> Predicate:
        parts = [self.negation()]
        while self._peek() == ("word", "OR"):
            self.pos += 1
            parts.append(self.negation())
        return lambda entry: any(p(entry) for p in parts)

    def negation(self) -> Predicate:
        token = self._peek()
        if token == ("word", "NOT"):
            self.pos += 1
            inner = self.negation()
            return lambda entry: not inner(entry)
        if token is not None and token[0] == "word" and token[1].startswith("-"):
            self.tokens[self.pos] = ("word", token[1][1:])
            inner = self.negation()
            return lambda entry: not inner(entry)
        return self.primary()

    def primary(self) -> Predicate:
        kind, value = self._take()
        if (kind, value) == ("paren", "("):
            inner = self.conjunction()
            if self._take() != ("paren", ")"):
                raise FilterError("Unparseable filter: missing ')'")
            return inner
        if kind != "word" or value in ("AND", "OR", "NOT"):
            raise FilterError(f"Unparseable filter: unexpected {value!r}")
        op_token = self._peek()
        if op_token is None or op_token[0] != "op":
            raise FilterError(f"the fake Cloud Logging does not support the global restriction "
                              f"{value!r}: name a field, e.g. textPayload:{value}")
        self.pos += 1
        op = op_token[1]
        if op in ("=~", "!~"):
            raise FilterError("the fake Cloud Logging does not support regular expressions")
        literal_kind, literal = self._take()
        if literal_kind == "string":
            literal = re.sub(r"\\(.)", r"\1", literal[1:-1])  # \" and \\ inside quotes
        elif literal_kind != "word":
            raise FilterError(f"Unparseable filter: expected a value after {value}{op}")
        return _comparison(value, op, literal)


def _lookup(entry: dict[str, Any], path: str) -> Any:
    node: Any = entry
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _instant(value: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(f"Invalid timestamp {value!r} in the filter.") from None


def _comparison(path: str, op: str, literal: str) -> Predicate:
    if op == "!=":
        equal = _comparison(path, "=", literal)
        return lambda entry: not equal(entry)
    if path == "severity":
        if literal.upper() not in SEVERITY_RANK and not literal.isdigit():
            raise FilterError(f"Invalid severity {literal!r} in the filter.")
        want = SEVERITY_RANK.get(literal.upper(), int(literal) if literal.isdigit() else 0)
        return lambda entry: _ordered(SEVERITY_RANK.get(entry.get("severity", "DEFAULT"), 0),
                                      op, want)
    if path in ("timestamp", "receiveTimestamp"):
        when = _instant(literal)
        return lambda entry: (entry.get(path) is not None
                              and _ordered(_instant(entry[path]), op, when))

    def compare(entry: dict[str, Any]) -> bool:
        value = _lookup(entry, path)
        if value is None or isinstance(value, (dict, list)):
            return False
        if op == ":":
            return literal.lower() in str(value).lower()
        if isinstance(value, bool):
            return op == "=" and str(value).lower() == literal.lower()
        if isinstance(value, (int, float)):
            try:
                return _ordered(float(value), op, float(literal))
            except ValueError:
                return False
        return _ordered(str(value), op, literal)

    return compare


def _ordered(left: Any, op: str, right: Any) -> bool:
    if op == "=":
        return bool(left == right)
    if op == ">":
        return bool(left > right)
    if op == "<":
        return bool(left < right)
    if op == ">=":
        return bool(left >= right)
    if op == "<=":
        return bool(left <= right)
    if op == ":":
        return bool(left == right)
    raise FilterError(f"Unsupported operator {op!r}")
