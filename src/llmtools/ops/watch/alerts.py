"""Alert rules: a small, safe expression language over window metrics (no eval).

Grammar::

    rule     := [NAME ':'] expr ['for' DURATION | 'for' INT ['window' | 'windows']]
    expr     := and ('or' and)*
    and      := not ('and' not)*
    not      := 'not' not | compare
    compare  := sum [('<' | '<=' | '>' | '>=' | '==' | '!=') sum]
    sum      := product (('+' | '-') product)*
    product  := unary (('*' | '/') unary)*
    unary    := '-' unary | atom
    atom     := NUMBER | METRIC | FUNC '(' FIELD [',' NUMBER] ')' | '(' expr ')'

A METRIC is a key of the window's metric record (`error_rate`, `p95_latency_ms`, `count`, ...).
Functions read per-field statistics: `psi(f)`, `ks(f)`, `ks_p(f)`, `js(f)`, `emb(f)`, `p50(f)`,
`p95(f)`, `p99(f)`, `quantile(f, q)`, `mean(f)`, `min(f)`, `max(f)`, `count(f)`, `sum(f)`.
With `watch --by`, `gap(m)` and `ratio(m)` compare a group metric m (error_rate, accuracy,
p95_latency_ms, ...) across the groups, and `min(m)` / `max(m)` of a group metric read the worst
and best group.
A FIELD is a dotted path (`model.name`) or a quoted string. A metric that has no value in a window
(no data, no reference yet) makes any comparison with it false, so an alert never fires on a
missing number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from llmtools.errors import UsageError

FUNCTIONS = ("psi", "ks", "ks_p", "js", "emb", "p50", "p95", "p99", "quantile", "mean", "min", "max", "count", "sum",
             "gap", "ratio")
# Functions over the groups of `watch --by` (min and max too, when their argument is a group metric).
GROUP_FUNCTIONS = ("gap", "ratio")

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)(?P<unit>ms|s|m|h|d)?(?![A-Za-z0-9_])
      | (?P<str>"[^"]*"|'[^']*')
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_\\-]+)*)
      | (?P<op><=|>=|==|!=|<|>|\(|\)|,|\+|-|\*|/|:)
    )""",
    re.VERBOSE,
)

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_KEYWORDS = {"and", "or", "not", "for", "window", "windows"}


@dataclass
class Tok:
    kind: str  # num, dur, str, name, op, end
    value: Any
    pos: int


def tokenize(text: str) -> list[Tok]:
    toks: list[Tok] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise UsageError(f"alert {text!r}: unexpected character at position {pos + 1}: {text[pos:pos + 10]!r}")
        if m.group("num") is not None:
            num = float(m.group("num"))
            unit = m.group("unit")
            toks.append(Tok("dur", num * _UNIT_SECONDS[unit], m.start("num")) if unit else Tok("num", num, m.start("num")))
        elif m.group("str") is not None:
            toks.append(Tok("str", m.group("str")[1:-1], m.start("str")))
        elif m.group("name") is not None:
            toks.append(Tok("name", m.group("name"), m.start("name")))
        else:
            toks.append(Tok("op", m.group("op"), m.start("op")))
        pos = m.end()
    toks.append(Tok("end", None, len(text)))
    return toks


# An AST node is a tuple: ("num", v) ("metric", name) ("call", fn, field, arg) ("neg", x)
# ("bin", op, a, b) ("cmp", op, a, b) ("and", a, b) ("or", a, b) ("not", a)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = tokenize(text)
        self.i = 0

    def peek(self) -> Tok:
        return self.toks[self.i]

    def take(self) -> Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def accept(self, kind: str, value: Any = None) -> Tok | None:
        tok = self.peek()
        if tok.kind == kind and (value is None or tok.value == value):
            self.i += 1
            return tok
        return None

    def fail(self, what: str) -> UsageError:
        tok = self.peek()
        got = "the end" if tok.kind == "end" else repr(str(tok.value))
        return UsageError(f"alert {self.text!r}: expected {what} at position {tok.pos + 1}, got {got}")

    def expect_op(self, op: str) -> None:
        if not self.accept("op", op):
            raise self.fail(f"'{op}'")

    # rule
    def rule(self) -> tuple[str | None, Any, tuple[str, float] | None]:
        name = None
        if self.peek().kind in ("name", "str") and self.toks[self.i + 1].kind == "op" and self.toks[self.i + 1].value == ":":
            name = str(self.take().value)
            self.take()
        expr = self.expr()
        hold = None
        if self.accept("name", "for"):
            tok = self.take()
            if tok.kind == "dur":
                hold = ("seconds", tok.value)
            elif tok.kind == "num" and tok.value >= 1 and float(tok.value).is_integer():
                self.accept("name", "windows") or self.accept("name", "window")
                hold = ("windows", int(tok.value))
            else:
                self.i -= 1
                raise self.fail("a duration such as 2m or a number of windows after 'for'")
        if self.peek().kind != "end":
            raise self.fail("an operator or the end of the rule")
        return name, expr, hold

    def expr(self) -> Any:
        node = self.and_()
        while self.accept("name", "or"):
            node = ("or", node, self.and_())
        return node

    def and_(self) -> Any:
        node = self.not_()
        while self.accept("name", "and"):
            node = ("and", node, self.not_())
        return node

    def not_(self) -> Any:
        if self.accept("name", "not"):
            return ("not", self.not_())
        return self.compare()

    def compare(self) -> Any:
        left = self.sum_()
        tok = self.peek()
        if tok.kind == "op" and tok.value in ("<", "<=", ">", ">=", "==", "!="):
            self.take()
            return ("cmp", tok.value, left, self.sum_())
        return left

    def sum_(self) -> Any:
        node = self.product()
        while (tok := self.peek()).kind == "op" and tok.value in ("+", "-"):
            self.take()
            node = ("bin", tok.value, node, self.product())
        return node

    def product(self) -> Any:
        node = self.unary()
        while (tok := self.peek()).kind == "op" and tok.value in ("*", "/"):
            self.take()
            node = ("bin", tok.value, node, self.unary())
        return node

    def unary(self) -> Any:
        if self.accept("op", "-"):
            return ("neg", self.unary())
        return self.atom()

    def atom(self) -> Any:
        tok = self.peek()
        if tok.kind in ("num", "dur"):
            self.take()
            # A duration in a comparison means seconds (`age > 5m`); only `for` needs units.
            return ("num", tok.value)
        if self.accept("op", "("):
            node = self.expr()
            self.expect_op(")")
            return node
        if tok.kind == "name" and tok.value not in _KEYWORDS:
            self.take()
            if self.accept("op", "("):
                if tok.value not in FUNCTIONS:
                    raise UsageError(f"alert {self.text!r}: unknown function {tok.value}(); known: {', '.join(FUNCTIONS)}")
                arg = self.take()
                if arg.kind not in ("name", "str"):
                    self.i -= 1
                    raise self.fail(f"a field name inside {tok.value}()")
                extra = None
                if self.accept("op", ","):
                    num = self.take()
                    if num.kind != "num":
                        self.i -= 1
                        raise self.fail("a number")
                    extra = num.value
                elif tok.value == "quantile":
                    raise self.fail("',' and a quantile such as 0.9 in quantile()")
                self.expect_op(")")
                return ("call", tok.value, str(arg.value), extra)
            return ("metric", tok.value)
        raise self.fail("a number, a metric name, a function call or '('")


def parse(text: str) -> tuple[str | None, Any, tuple[str, float] | None]:
    """Parse a rule into (name, AST, hold) or raise UsageError (exit 2)."""
    if not text.strip():
        raise UsageError("alert: empty rule")
    return _Parser(text).rule()


def metrics_used(node: Any, out: list[tuple] | None = None) -> list[tuple]:
    """The metric and call nodes an AST reads, in order, without repeats."""
    out = [] if out is None else out
    kind = node[0]
    if kind in ("metric", "call"):
        if node not in out:
            out.append(node)
    elif kind in ("neg", "not"):
        metrics_used(node[1], out)
    elif kind in ("and", "or"):
        metrics_used(node[1], out)
        metrics_used(node[2], out)
    elif kind in ("bin", "cmp"):
        metrics_used(node[2], out)
        metrics_used(node[3], out)
    return out


def label(node: tuple) -> str:
    if node[0] == "metric":
        return node[1]
    _, fn, fld, extra = node
    return f"{fn}({fld}{', ' + format(extra, 'g') if extra is not None else ''})"


Lookup = Callable[[tuple], Any]


def evaluate(node: Any, lookup: Lookup) -> Any:
    """Evaluate an AST; `lookup` maps a metric or call node to a number or None."""
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind in ("metric", "call"):
        value = lookup(node)
        if isinstance(value, bool):
            return float(value)
        return value if isinstance(value, (int, float)) else None
    if kind == "neg":
        v = evaluate(node[1], lookup)
        return None if v is None else -v
    if kind == "bin":
        a, b = evaluate(node[2], lookup), evaluate(node[3], lookup)
        if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
            return None
        op = node[1]
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        return a / b if b != 0 else None
    if kind == "cmp":
        a, b = evaluate(node[2], lookup), evaluate(node[3], lookup)
        if a is None or b is None:
            return False
        op = node[1]
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[op]
    if kind == "and":
        return _truth(evaluate(node[1], lookup)) and _truth(evaluate(node[2], lookup))
    if kind == "or":
        return _truth(evaluate(node[1], lookup)) or _truth(evaluate(node[2], lookup))
    if kind == "not":
        return not _truth(evaluate(node[1], lookup))
    raise AssertionError(kind)


def _truth(v: Any) -> bool:
    return bool(v) if v is not None else False


@dataclass
class Alert:
    """One --alert rule and its state: inactive -> pending -> firing -> (resolved) inactive."""

    text: str
    name: str | None = None
    ast: Any = None
    hold: tuple[str, float] | None = None
    state: str = "inactive"
    true_since: float | None = None  # start of the first window of the current true streak
    true_windows: int = 0
    fired_at: str | None = None
    times_fired: int = 0
    values: dict = field(default_factory=dict)

    @classmethod
    def from_text(cls, text: str) -> "Alert":
        name, ast, hold = parse(text)
        return cls(text=text.strip(), name=name, ast=ast, hold=hold)

    def step(self, lookup: Lookup, window_start: float | None, window_end: float | None, when: str | None) -> str | None:
        """Evaluate on one closed window; returns "firing" or "resolved" on a transition."""
        self.values = {label(n): lookup(n) for n in metrics_used(self.ast)}
        true = _truth(evaluate(self.ast, lookup))
        if not true:
            self.true_since = None
            self.true_windows = 0
            was_firing = self.state == "firing"
            self.state = "inactive"
            return "resolved" if was_firing else None
        if self.true_windows == 0:
            self.true_since = window_start
        self.true_windows += 1
        if self.state == "firing":
            return None
        if self._held(window_end):
            self.state = "firing"
            self.fired_at = when
            self.times_fired += 1
            return "firing"
        self.state = "pending"
        return None

    def _held(self, window_end: float | None) -> bool:
        if self.hold is None:
            return True
        kind, amount = self.hold
        if kind == "windows":
            return self.true_windows >= amount
        if self.true_since is None or window_end is None:
            return False  # a time `for` needs time windows (records with a time field)
        return window_end - self.true_since >= amount - 1e-9
