"""A small PromQL parser for the tests: enough of the grammar to check an expression's syntax and list the metric
names it selects (vector selectors), written from the PromQL documentation, independent of Prometheus' own code.

It covers what alert rules and dashboards use: number and string literals, vector selectors with label matchers,
range vectors and subqueries (``[5m]``, ``[1h:1m]``, Grafana's ``[$__rate_interval]``), ``offset``, function calls,
aggregations with ``by``/``without`` before or after their arguments, unary minus, and binary operators by
precedence with ``bool``, ``on``/``ignoring`` and ``group_left``/``group_right``. Anything else is a ``PromQLError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

AGGREGATIONS = frozenset({"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                          "bottomk", "topk", "quantile"})
FUNCTIONS = frozenset({
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_quantile",
    "histogram_count", "histogram_sum", "histogram_fraction", "holt_winters", "hour", "idelta", "increase", "irate",
    "label_join", "label_replace", "ln", "log2", "log10", "minute", "month", "predict_linear", "rate", "resets",
    "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector", "year",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "quantile_over_time",
    "stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time",
})
RANGE_FUNCTIONS = frozenset({"rate", "irate", "increase", "delta", "idelta", "deriv", "changes", "resets",
                             "predict_linear", "holt_winters", "absent_over_time"}) | {
    f for f in FUNCTIONS if f.endswith("_over_time")}
# binary operators, lowest precedence first
PRECEDENCE = {"or": 1, "and": 2, "unless": 2, "==": 3, "!=": 3, ">": 3, "<": 3, ">=": 3, "<=": 3,
              "+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "atan2": 5, "^": 6}
COMPARISONS = frozenset({"==", "!=", ">", "<", ">=", "<="})
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
                      "and", "or", "unless", "atan2"})

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?:[Nn]a[Nn]|[Ii]nf)(?![\w:]))
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<var>\$__\w+|\$\{\w+\}|\$\w+)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(){}\[\],:])
""", re.VERBOSE)


class PromQLError(ValueError):
    """The expression is not valid PromQL (as far as this parser knows)."""


@dataclass
class Parsed:
    """What an expression selects and how it ends."""

    metrics: set[str] = field(default_factory=set)
    top_operator: str | None = None  # the outermost binary operator (an alert's comparison)


def tokenize(expr: str) -> list[tuple[str, str]]:
    """(kind, text) tokens of ``expr``; PromQLError at the first character no token matches."""
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise PromQLError(f"unexpected character {expr[pos]!r} at {pos} in {expr!r}")
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
        pos = m.end()
    return out


def parse(expr: str) -> Parsed:
    """Parse ``expr``: the metric names it selects and its outermost operator; PromQLError if it is not valid."""
    p = _Parser(tokenize(expr), expr)
    kind, top = p.expression(0)
    if p.peek() is not None:
        raise PromQLError(f"unexpected {p.peek()[1]!r} after a complete expression in {expr!r}")
    p.result.top_operator = top
    return p.result


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    return parse(expr).metrics


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], text: str) -> None:
        self.tokens = tokens
        self.i = 0
        self.text = text
        self.result = Parsed()

    # -- token helpers ---------------------------------------------------------------------------------------------
    def peek(self, ahead: int = 0) -> tuple[str, str] | None:
        j = self.i + ahead
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise PromQLError(f"unexpected end of {self.text!r}")
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok[1] != text:
            raise PromQLError(f"expected {text!r}, found {tok[1]!r} in {self.text!r}")

    def at(self, text: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] == text

    # -- grammar ---------------------------------------------------------------------------------------------------
    def expression(self, min_prec: int) -> tuple[str, str | None]:
        """(value kind: scalar | vector | range | string, the outermost operator or None)."""
        kind = self.unary()
        top = None
        while True:
            tok = self.peek()
            if tok is None or tok[1] not in PRECEDENCE or PRECEDENCE[tok[1]] < min_prec:
                return kind, top
            op = self.take()[1]
            prec = PRECEDENCE[op]
            if self.at("bool"):
                if op not in COMPARISONS:
                    raise PromQLError(f"'bool' after {op!r} (not a comparison) in {self.text!r}")
                self.take()
            if self.at("on") or self.at("ignoring"):
                self.take()
                self.label_list()
                if self.at("group_left") or self.at("group_right"):
                    self.take()
                    if self.at("("):
                        self.label_list()
            right, _ = self.expression(prec if op == "^" else prec + 1)
            for side in (kind, right):
                if side in ("range", "string"):
                    raise PromQLError(f"operator {op!r} on a {side} in {self.text!r}")
            if op in ("and", "or", "unless") and "scalar" in (kind, right):
                raise PromQLError(f"set operator {op!r} on a scalar in {self.text!r}")
            kind = "scalar" if kind == right == "scalar" else "vector"
            top = op

    def unary(self) -> str:
        if self.at("-") or self.at("+"):
            self.take()
            kind = self.unary()
            if kind not in ("scalar", "vector"):
                raise PromQLError(f"unary minus on a {kind} in {self.text!r}")
            return kind
        return self.postfix(self.primary())

    def postfix(self, kind: str) -> str:
        if self.at("["):
            if kind != "vector":
                raise PromQLError(f"range on a {kind} in {self.text!r}")
            self.take()
            self.duration()
            if self.at(":"):  # subquery
                self.take()
                if not self.at("]"):
                    self.duration()
            self.expect("]")
            kind = "range"
        if self.at("offset"):
            self.take()
            if self.at("-"):
                self.take()
            self.duration()
        return kind

    def duration(self) -> None:
        kind, text = self.take()
        if kind not in ("duration", "var"):
            raise PromQLError(f"expected a duration, found {text!r} in {self.text!r}")

    def primary(self) -> str:
        kind, text = self.take()
        if kind == "number":
            return "scalar"
        if kind == "string":
            return "string"
        if text == "(":
            inner, _ = self.expression(0)
            self.expect(")")
            return inner
        if text == "{":
            self.i -= 1
            self.matchers(name=None)
            return "vector"
        if kind != "ident" or text in KEYWORDS:
            raise PromQLError(f"unexpected {text!r} in {self.text!r}")
        if text in AGGREGATIONS:
            return self.aggregation(text)
        if self.at("("):
            if text not in FUNCTIONS:
                raise PromQLError(f"unknown function {text!r} in {self.text!r}")
            return self.call(text)
        self.result.metrics.add(text)
        if self.at("{"):
            self.matchers(name=text)
        return "vector"

    def aggregation(self, name: str) -> str:
        if self.at("by") or self.at("without"):
            self.take()
            self.label_list()
        self.expect("(")
        args = [self.expression(0)[0]]
        while self.at(","):
            self.take()
            args.append(self.expression(0)[0])
        self.expect(")")
        if self.at("by") or self.at("without"):
            self.take()
            self.label_list()
        wanted = 2 if name in ("topk", "bottomk", "quantile", "count_values") else 1
        if len(args) != wanted or args[-1] != "vector":
            raise PromQLError(f"{name}() takes {wanted} argument(s), the last an instant vector, in {self.text!r}")
        return "vector"

    def call(self, name: str) -> str:
        self.expect("(")
        args = []
        if not self.at(")"):
            args.append(self.expression(0)[0])
            while self.at(","):
                self.take()
                args.append(self.expression(0)[0])
        self.expect(")")
        if name in RANGE_FUNCTIONS and (not args or args[0] != "range"):
            raise PromQLError(f"{name}() needs a range vector (e.g. x[5m]) in {self.text!r}")
        if name == "histogram_quantile" and (len(args) != 2 or args != ["scalar", "vector"]):
            raise PromQLError(f"histogram_quantile(scalar, vector) in {self.text!r}")
        if name in ("time", "scalar", "pi"):
            return "scalar"
        return "vector"

    def label_list(self) -> None:
        self.expect("(")
        while not self.at(")"):
            kind, text = self.take()
            if kind != "ident":
                raise PromQLError(f"expected a label name, found {text!r} in {self.text!r}")
            if not self.at(")"):
                self.expect(",")
        self.take()

    def matchers(self, name: str | None) -> None:
        self.expect("{")
        seen = 0
        while not self.at("}"):
            kind, label = self.take()
            if kind != "ident":
                raise PromQLError(f"expected a label name, found {label!r} in {self.text!r}")
            op = self.take()[1]
            if op not in ("=", "!=", "=~", "!~"):
                raise PromQLError(f"expected a label matcher operator, found {op!r} in {self.text!r}")
            if self.take()[0] != "string":
                raise PromQLError(f"a label matcher's value must be a string in {self.text!r}")
            if label == "__name__":
                raise PromQLError("this parser does not resolve __name__ matchers: name the metric")
            seen += 1
            if not self.at("}"):
                self.expect(",")
        self.take()
        if name is None and seen == 0:
            raise PromQLError(f"an empty selector {{}} in {self.text!r}")
