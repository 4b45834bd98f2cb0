"""The ABAC policy language: a small restricted grammar, parsed (never ``eval``ed).

Grammar (keywords are lower case)::

    policy   := or
    or       := and ("or" and)*
    and      := not ("and" not)*
    not      := "not" not | "(" or ")" | compare
    compare  := operand ("==" | "!=" | "<" | "<=" | ">" | ">=" | "in") operand
    operand  := STRING | NUMBER | list | ("user" | "doc") "." NAME
    list     := "[" [scalar ("," scalar)*] "]"          scalar := STRING | NUMBER

Examples::

    user.department == doc.department and user.clearance >= doc.sensitivity
    doc.sensitivity <= "internal" or user.department in doc.departments

A policy compiles to a Django ``Q`` over ``Document`` (``doc.*`` become
lookups into ``Document.attributes``; ``user.*`` are replaced by the asking
user's values) and to a Python predicate; the two agree on every input
(tests/access/test_policy.py checks this with hypothesis).

Semantics — deny by default:

* Only strings, numbers and lists are values.  A missing attribute, or one
  holding anything else (true/false, null, an object), makes every
  comparison it takes part in false — ``!=`` included.
* ``==`` / ``!=`` compare a string with a string or a number with a number;
  other pairs are false.
* ``<  <=  >  >=`` compare numbers; when either side is a ``sensitivity``
  or ``clearance`` attribute they compare sensitivity levels instead:
  public < internal < confidential < secret (other strings: false).
* ``a in b``: ``b`` is a list (literal or attribute) holding a string or
  number equal to ``a``.
* Comparing two ``doc.*`` attributes with each other is refused when the
  policy is saved (it cannot be evaluated by the index pre-filter).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import BooleanField, Expression, F, Q
from django.db.models.expressions import Combinable

LEVELS = ("public", "internal", "confidential", "secret")
LEVEL_RANK = {name: rank for rank, name in enumerate(LEVELS)}
LEVEL_ATTRIBUTES = frozenset({"sensitivity", "clearance"})
ORDERED_OPS = ("<", "<=", ">", ">=")
MAX_POLICY_CHARS = 4000
MAX_DEPTH = 40
MAX_LIST_ITEMS = 200


class PolicyError(ValueError):
    """An invalid policy; ``position`` is the 0-based offset of the offending character."""

    def __init__(self, message: str, position: int, source: str = "") -> None:
        self.message = message
        self.position = position
        self.source = source
        super().__init__(self.describe())

    @property
    def column(self) -> int:
        return self.position + 1

    def describe(self) -> str:
        text = f"{self.message} (at character {self.column})"
        if self.source and "\n" not in self.source and len(self.source) <= 200:
            text += f"\n  {self.source}\n  {' ' * self.position}^"
        return text


# ------------------------------------------------------------------ tokens

@dataclass(frozen=True)
class Token:
    kind: str      # "str", "num", "name", "op", "punct", "end"
    value: Any
    pos: int


_OPS = ("==", "!=", "<=", ">=", "<", ">")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t"}


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if ch in "\"'":
            start, i = i, i + 1
            out: list[str] = []
            while True:
                if i >= n:
                    raise PolicyError("unterminated string", start, source)
                c = source[i]
                if c == ch:
                    i += 1
                    break
                if c == "\\":
                    if i + 1 >= n or source[i + 1] not in _ESCAPES:
                        raise PolicyError("unknown escape in string", i, source)
                    out.append(_ESCAPES[source[i + 1]])
                    i += 2
                    continue
                out.append(c)
                i += 1
            tokens.append(Token("str", "".join(out), start))
            continue
        if ch.isdigit() or (ch in "-." and i + 1 < n and (source[i + 1].isdigit() or source[i + 1] == ".")):
            match = _NUMBER.match(source, i)
            if match is None:
                raise PolicyError("malformed number", i, source)
            text = match.group(0)
            value: float | int = float(text) if any(c in text for c in ".eE") else int(text)
            if isinstance(value, float) and not abs(value) < float("inf"):
                raise PolicyError("number out of range", i, source)
            if isinstance(value, int) and abs(value) > 2**53:
                raise PolicyError("number out of range", i, source)
            tokens.append(Token("num", value, i))
            i = match.end()
            continue
        match = _NAME.match(source, i)
        if match:
            tokens.append(Token("name", match.group(0), i))
            i = match.end()
            continue
        op = next((op for op in _OPS if source.startswith(op, i)), None)
        if op is not None:
            tokens.append(Token("op", op, i))
            i += len(op)
            continue
        if ch in "()[],.":
            tokens.append(Token("punct", ch, i))
            i += 1
            continue
        if ch == "=":
            raise PolicyError("use '==' to compare", i, source)
        raise PolicyError(f"unexpected character {ch!r}", i, source)
    tokens.append(Token("end", None, n))
    return tokens


# ------------------------------------------------------------------ syntax tree

@dataclass(frozen=True)
class Attr:
    side: str   # "user" or "doc"
    name: str
    pos: int


@dataclass(frozen=True)
class Literal:
    value: Any  # str, int, float, or tuple of str/int/float
    pos: int


Operand = Attr | Literal


@dataclass(frozen=True)
class Compare:
    op: str
    left: Operand
    right: Operand
    pos: int

    @property
    def levelled(self) -> bool:
        return any(isinstance(side, Attr) and side.name in LEVEL_ATTRIBUTES for side in (self.left, self.right))


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" / "or"
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Compare | BoolOp | Not


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.i = 0
        self.depth = 0

    def error(self, message: str, token: Token | None = None) -> PolicyError:
        token = token or self.peek()
        return PolicyError(message, token.pos, self.source)

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def at(self, kind: str, value: Any = None) -> bool:
        token = self.peek()
        return token.kind == kind and (value is None or token.value == value)

    def expect(self, kind: str, value: Any, what: str) -> Token:
        if not self.at(kind, value):
            raise self.error(f"expected {what}, found {self.describe(self.peek())}")
        return self.take()

    @staticmethod
    def describe(token: Token) -> str:
        if token.kind == "end":
            return "the end of the policy"
        if token.kind == "str":
            return f"string {token.value!r}"
        return repr(str(token.value))

    def parse(self) -> Node:
        if not self.source.strip():
            raise PolicyError("the policy is empty", 0, self.source)
        node = self.parse_or()
        if not self.at("end"):
            raise self.error(f"expected 'and', 'or' or the end of the policy, found {self.describe(self.peek())}")
        return node

    def parse_or(self) -> Node:
        items = [self.parse_and()]
        while self.at("name", "or"):
            self.take()
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def parse_and(self) -> Node:
        items = [self.parse_not()]
        while self.at("name", "and"):
            self.take()
            items.append(self.parse_not())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def parse_not(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error("the policy is nested too deeply")
        try:
            if self.at("name", "not"):
                self.take()
                return Not(self.parse_not())
            if self.at("punct", "("):
                self.take()
                node = self.parse_or()
                self.expect("punct", ")", "')'")
                return node
            return self.parse_compare()
        finally:
            self.depth -= 1

    def parse_compare(self) -> Compare:
        left = self.parse_operand()
        token = self.peek()
        if token.kind == "op" or (token.kind == "name" and token.value == "in"):
            self.take()
        else:
            raise self.error(f"expected a comparison (== != < <= > >= in), found {self.describe(token)}")
        op = str(token.value)
        right = self.parse_operand()
        compare = Compare(op, left, right, token.pos)
        self.check(compare)
        return compare

    def parse_operand(self) -> Operand:
        token = self.peek()
        if token.kind in ("str", "num"):
            self.take()
            return Literal(token.value, token.pos)
        if token.kind == "punct" and token.value == "[":
            return self.parse_list()
        if token.kind == "name" and token.value in ("user", "doc"):
            self.take()
            self.expect("punct", ".", f"'.' after {token.value!r}")
            name = self.peek()
            if name.kind != "name":
                raise self.error(f"expected an attribute name after '{token.value}.'")
            self.take()
            return Attr(str(token.value), str(name.value), token.pos)
        if token.kind == "name":
            raise self.error(f"unknown name {token.value!r}: attributes are written user.NAME or doc.NAME")
        raise self.error(f"expected a value or an attribute, found {self.describe(token)}")

    def parse_list(self) -> Literal:
        start = self.take()
        items: list[Any] = []
        if not self.at("punct", "]"):
            while True:
                token = self.peek()
                if token.kind not in ("str", "num"):
                    raise self.error(f"list items must be strings or numbers, found {self.describe(token)}")
                items.append(self.take().value)
                if len(items) > MAX_LIST_ITEMS:
                    raise self.error(f"a list can hold at most {MAX_LIST_ITEMS} items")
                if self.at("punct", ","):
                    self.take()
                    continue
                break
        self.expect("punct", "]", "',' or ']'")
        return Literal(tuple(items), start.pos)

    def check(self, node: Compare) -> None:
        """Static checks: what the grammar allows but the semantics cannot use."""
        left, right = node.left, node.right
        if isinstance(left, Attr) and isinstance(right, Attr) and left.side == right.side == "doc":
            raise PolicyError("two document attributes cannot be compared with each other", node.pos, self.source)
        if isinstance(left, Literal) and isinstance(left.value, tuple):
            raise PolicyError("a list can only appear on the right of 'in'", left.pos, self.source)
        if node.op != "in" and isinstance(right, Literal) and isinstance(right.value, tuple):
            raise PolicyError("a list can only appear on the right of 'in'", right.pos, self.source)
        if node.op == "in" and isinstance(right, Literal) and not isinstance(right.value, tuple):
            raise PolicyError("'in' needs a list (or a list attribute) on its right", right.pos, self.source)
        if node.op in ORDERED_OPS:
            for side in (left, right):
                if not isinstance(side, Literal):
                    continue
                if node.levelled:
                    if side.value not in LEVEL_RANK:
                        raise PolicyError(
                            f"{side.value!r} is not a sensitivity level ({' < '.join(LEVELS)})", side.pos, self.source
                        )
                elif isinstance(side.value, str):
                    raise PolicyError(
                        f"'{node.op}' compares numbers, or sensitivity levels of sensitivity/clearance attributes",
                        side.pos, self.source,
                    )


def parse(source: str) -> Node:
    """Parse a policy; raises ``PolicyError`` pointing at the first problem."""
    if len(source) > MAX_POLICY_CHARS:
        raise PolicyError(f"a policy can be at most {MAX_POLICY_CHARS} characters", MAX_POLICY_CHARS, "")
    return _Parser(source).parse()


# ------------------------------------------------------------------ values

_MISSING = object()


def _value(raw: Any) -> Any:
    """A usable value (str, number, or tuple of raw items), or _MISSING."""
    if isinstance(raw, bool) or raw is None:
        return _MISSING
    if isinstance(raw, str | int | float):
        return raw
    if isinstance(raw, list | tuple):
        return tuple(raw)
    return _MISSING


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(a: Any, b: Any) -> bool | None:
    """True/False for comparable scalars; None when the pair is not comparable."""
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if _is_num(a) and _is_num(b):
        return bool(a == b)
    return None


def _ordered(op: str, a: Any, b: Any, levelled: bool) -> bool:
    if levelled:
        if not (isinstance(a, str) and isinstance(b, str) and a in LEVEL_RANK and b in LEVEL_RANK):
            return False
        a, b = LEVEL_RANK[a], LEVEL_RANK[b]
    elif not (_is_num(a) and _is_num(b)):
        return False
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def compare_values(op: str, a: Any, b: Any, *, levelled: bool = False) -> bool:
    """The meaning of one comparison on resolved values (``_MISSING`` allowed)."""
    if a is _MISSING or b is _MISSING:
        return False
    if op == "in":
        if not isinstance(b, tuple) or isinstance(a, tuple):
            return False
        return any(_equal(a, item) is True for item in b)
    if isinstance(a, tuple) or isinstance(b, tuple):
        return False
    if op in ("==", "!="):
        equal = _equal(a, b)
        if equal is None:
            return False
        return equal if op == "==" else not equal
    return _ordered(op, a, b, levelled)


# ------------------------------------------------------------------ predicate

def _resolve(operand: Operand, user_attrs: Mapping[str, Any], doc_attrs: Mapping[str, Any]) -> Any:
    if isinstance(operand, Literal):
        return operand.value
    attrs = user_attrs if operand.side == "user" else doc_attrs
    if not isinstance(attrs, Mapping) or operand.name not in attrs:
        return _MISSING
    return _value(attrs[operand.name])


def evaluate(node: Node, user_attrs: Mapping[str, Any], doc_attrs: Mapping[str, Any]) -> bool:
    """The Python predicate: does this policy allow this user to read this document?"""
    if isinstance(node, BoolOp):
        if node.op == "and":
            return all(evaluate(item, user_attrs, doc_attrs) for item in node.items)
        return any(evaluate(item, user_attrs, doc_attrs) for item in node.items)
    if isinstance(node, Not):
        return not evaluate(node.item, user_attrs, doc_attrs)
    return compare_values(
        node.op, _resolve(node.left, user_attrs, doc_attrs), _resolve(node.right, user_attrs, doc_attrs),
        levelled=node.levelled,
    )


# ------------------------------------------------------------------ SQL


class _AttributeTest(Expression):
    """A boolean test on one key of a JSON column, never NULL (so ``NOT`` is safe).

    ``kind``: ``str_in`` (the value is one of these strings), ``num`` (the
    value is a number and ``op`` holds against ``values[0]``), ``contains``
    (the value is an array holding ``values[0]``, a string or a number).
    """

    output_field = BooleanField()
    conditional = True

    def __init__(self, column: Any, key: str, kind: str, op: str, values: tuple[Any, ...]) -> None:
        super().__init__(output_field=BooleanField())
        self.column = column
        self.key = key
        self.kind = kind
        self.op = op
        self.values = values

    def get_source_expressions(self) -> list[Combinable | Expression]:
        return [self.column]

    def set_source_expressions(self, exprs: Sequence[Combinable | Expression]) -> None:
        (self.column,) = exprs

    # django-stubs types params as a tuple of str/int; Django 5.2 takes any sequence (its own
    # expressions return lists), and a JSON number compared here may be a float.
    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:  # type: ignore[override]
        col, col_params = compiler.compile(self.column)
        if connection.vendor == "postgresql":
            sql, params = self._postgresql(col)
        elif connection.vendor == "sqlite":
            sql, params = self._sqlite(col)
        else:  # pragma: no cover - Cairn runs on these two
            raise NotImplementedError(f"policies are not supported on {connection.vendor}")
        if col_params:  # a plain column reference has none
            raise NotImplementedError("policy tests need a plain JSON column")
        return f"COALESCE(({sql.replace('{col}', col)}), FALSE)", params

    def _sqlite(self, col: str) -> tuple[str, list[Any]]:
        path = f'$."{self.key}"'
        if self.kind == "is_str":
            return "json_type({col}, %s) = 'text'", [path]
        if self.kind == "str_in":
            marks = ", ".join(["%s"] * len(self.values))
            return (f"json_type({{col}}, %s) = 'text' AND json_extract({{col}}, %s) IN ({marks})",
                    [path, path, *self.values])
        if self.kind == "num":
            return (f"json_type({{col}}, %s) IN ('integer', 'real') AND json_extract({{col}}, %s) {self._sql_op()} %s",
                    [path, path, self.values[0]])
        value = self.values[0]
        types = "('text')" if isinstance(value, str) else "('integer', 'real')"
        return (f"json_type({{col}}, %s) = 'array' AND EXISTS (SELECT 1 FROM json_each({{col}}, %s) AS e "
                f"WHERE e.type IN {types} AND e.value = %s)",
                [path, path, value])

    def _postgresql(self, col: str) -> tuple[str, list[Any]]:
        key = self.key
        if self.kind == "is_str":
            return "jsonb_typeof({col} -> %s) = 'string'", [key]
        if self.kind == "str_in":
            marks = ", ".join(["%s"] * len(self.values))
            return (f"jsonb_typeof({{col}} -> %s) = 'string' AND ({{col}} ->> %s) IN ({marks})",
                    [key, key, *self.values])
        if self.kind == "num":
            return (f"jsonb_typeof({{col}} -> %s) = 'number' AND ({{col}} ->> %s)::numeric {self._sql_op()} %s::numeric",
                    [key, key, str(self.values[0])])
        value = self.values[0]
        if isinstance(value, str):
            test = "jsonb_typeof(e.v) = 'string' AND (e.v #>> '{}') = %s"
            param: Any = value
        else:
            test = "jsonb_typeof(e.v) = 'number' AND (e.v #>> '{}')::numeric = %s::numeric"
            param = str(value)
        return (f"jsonb_typeof({{col}} -> %s) = 'array' AND EXISTS (SELECT 1 FROM "
                f"jsonb_array_elements({{col}} -> %s) AS e(v) WHERE {test})",
                [key, key, param])

    def _sql_op(self) -> str:
        return {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[self.op]


# A compiled policy is True (allows everything), False (allows nothing) or a Q.
Compiled = bool | Q


def policy_and(a: Compiled, b: Compiled) -> Compiled:
    if a is False or b is False:
        return False
    if a is True:
        return b
    if b is True:
        return a
    return a & b


def policy_or(a: Compiled, b: Compiled) -> Compiled:
    if a is True or b is True:
        return True
    if a is False:
        return b
    if b is False:
        return a
    return a | b


def _not(a: Compiled) -> Compiled:
    if isinstance(a, bool):
        return not a
    return ~a


_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def compile_q(node: Node, user_attrs: Mapping[str, Any], *, field: str = "attributes") -> Compiled:
    """The policy as a filter over documents, for this user; ``field`` names the JSON column."""
    if isinstance(node, BoolOp):
        combine = policy_and if node.op == "and" else policy_or
        result: Compiled = node.op == "and"
        for item in node.items:
            result = combine(result, compile_q(item, user_attrs, field=field))
        return result
    if isinstance(node, Not):
        return _not(compile_q(node.item, user_attrs, field=field))
    return _compile_compare(node, user_attrs, field)


def _compile_compare(node: Compare, user_attrs: Mapping[str, Any], field: str) -> Compiled:
    left, right, op = node.left, node.right, node.op
    doc_on_left = isinstance(left, Attr) and left.side == "doc"
    doc_on_right = isinstance(right, Attr) and right.side == "doc"
    if not (doc_on_left or doc_on_right):
        return compare_values(op, _resolve(left, user_attrs, {}), _resolve(right, user_attrs, {}),
                              levelled=node.levelled)
    if doc_on_left:
        doc, other, doc_first = left, _resolve(right, user_attrs, {}), True
    else:
        doc, other, doc_first = right, _resolve(left, user_attrs, {}), False
    assert isinstance(doc, Attr)
    if other is _MISSING:
        return False

    def test(kind: str, test_op: str, values: tuple[Any, ...]) -> Q:
        return Q(_AttributeTest(F(field), doc.name, kind, test_op, values))

    if op == "in":
        if doc_first:  # doc.x in <list>
            if not isinstance(other, tuple):
                return False
            strings = tuple(dict.fromkeys(v for v in other if isinstance(v, str)))
            numbers = tuple(dict.fromkeys(v for v in other if _is_num(v)))
            result: Compiled = test("str_in", "==", strings) if strings else False
            for number in numbers:
                result = policy_or(result, test("num", "==", (number,)))
            return result
        # <scalar> in doc.x
        if isinstance(other, tuple) or not (isinstance(other, str) or _is_num(other)):
            return False
        return test("contains", "==", (other,))
    if isinstance(other, tuple):
        return False
    this_op = op if doc_first else _FLIP[op]  # rewrite as: doc.x <this_op> other
    if op in ("==", "!="):
        if isinstance(other, str):
            if op == "==":
                return test("str_in", "==", (other,))
            return test("is_str", "==", ()) & ~test("str_in", "==", (other,))
        if _is_num(other):
            return test("num", this_op, (other,))
        return False
    if node.levelled:
        if not isinstance(other, str) or other not in LEVEL_RANK:
            return False
        rank = LEVEL_RANK[other]
        allowed = tuple(
            name for name, r in LEVEL_RANK.items()
            if {"<": r < rank, "<=": r <= rank, ">": r > rank, ">=": r >= rank}[this_op]
        )
        return test("str_in", "==", allowed) if allowed else False
    if _is_num(other):
        return test("num", this_op, (other,))
    return False


@dataclass(frozen=True)
class Policy:
    """A parsed policy with both of its compiled forms."""

    source: str
    tree: Node

    @classmethod
    def parse(cls, source: str) -> Policy:
        return cls(source, parse(source))

    def allows(self, user_attrs: Mapping[str, Any], doc_attrs: Mapping[str, Any]) -> bool:
        return evaluate(self.tree, user_attrs or {}, doc_attrs or {})

    def q(self, user_attrs: Mapping[str, Any], *, field: str = "attributes") -> Compiled:
        return compile_q(self.tree, user_attrs or {}, field=field)


ATTRIBUTE_NAME = _NAME


def attribute_equals(key: str, value: str, *, field: str = "attributes") -> Q:
    """Documents whose attribute ``key`` is the string ``value``, or a list holding it (a search filter).

    The same SQL tests as a policy's ``doc.key == "value"`` / ``"value" in doc.key``, on SQLite and
    PostgreSQL; ``key`` must be an attribute name (``ATTRIBUTE_NAME``), else ``ValueError``.
    """
    if not ATTRIBUTE_NAME.fullmatch(key):
        raise ValueError(f"not an attribute name: {key!r}")
    return (Q(_AttributeTest(F(field), key, "str_in", "==", (value,)))
            | Q(_AttributeTest(F(field), key, "contains", "==", (value,))))
