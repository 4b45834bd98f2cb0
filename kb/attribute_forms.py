"""Attributes as rows of a web form (name, type, value) and back.

The ABAC policy language compares strings, numbers and lists of them
(``access.policy``), so a row's type says how its value is read: text, a
number, or a comma-separated list of texts or of numbers.  Rows are parsed
here, at the edge; ``access.administration.attributes_validate`` (called by
the services) still decides what may be stored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext, gettext_lazy

from kb.exceptions import InvalidInput

TEXT, NUMBER, TEXT_LIST, NUMBER_LIST = "text", "number", "text-list", "number-list"
TYPES = (
    (TEXT, gettext_lazy("text")),
    (NUMBER, gettext_lazy("number")),
    (TEXT_LIST, gettext_lazy("list of texts")),
    (NUMBER_LIST, gettext_lazy("list of numbers")),
)
BLANK_ROWS = 2
MAX_ROWS = 50
_INTEGER = re.compile(r"^[+-]?\d{1,18}$")


@dataclass(frozen=True)
class Row:
    name: str
    type: str
    value: str
    source: str = ""  # who set it (user attributes: admin / idp / scim)


def _number(name: str, text: str) -> int | float:
    text = text.strip()
    if _INTEGER.match(text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(
            gettext("%(name)s: %(value)s is not a number.")
            % {"name": name, "value": repr(text[:40])}
        ) from None
    if not math.isfinite(value):
        raise InvalidInput(gettext("%(name)s: numbers must be finite.") % {"name": name})
    return value


def attributes_from_rows(
    names: Sequence[str], types: Sequence[str], values: Sequence[str]
) -> dict[str, Any]:
    """The attributes the rows describe; ``InvalidInput`` (a 400, naming the row) for one that makes no sense.

    A row with neither name nor value is ignored (the form's blank rows); a
    row with only one of them is an error, and so is a name given twice.
    """
    if not (len(names) == len(types) == len(values)):
        raise InvalidInput(gettext("The form was incomplete; reload the page and try again."))
    if len(names) > MAX_ROWS + BLANK_ROWS:
        raise InvalidInput(gettext("At most %(count)d attributes.") % {"count": MAX_ROWS})
    attributes: dict[str, Any] = {}
    for number, (raw_name, kind, raw_value) in enumerate(zip(names, types, values, strict=True), 1):
        name, value = raw_name.strip(), raw_value.strip()
        if not name and not value:
            continue
        if not name:
            raise InvalidInput(gettext("Row %(row)d has a value but no name.") % {"row": number})
        if name in attributes:
            raise InvalidInput(gettext("%(name)s is given twice.") % {"name": name[:70]})
        if kind == TEXT:
            if not value:
                raise InvalidInput(
                    gettext("%(name)s has no value: give one, or clear the name to remove it.")
                    % {"name": name[:70]}
                )
            attributes[name] = value
        elif kind == NUMBER:
            attributes[name] = _number(name[:70], value)
        elif kind in (TEXT_LIST, NUMBER_LIST):
            items = [item.strip() for item in value.split(",") if item.strip()]
            attributes[name] = (
                [_number(name[:70], item) for item in items] if kind == NUMBER_LIST else items
            )
        else:
            raise InvalidInput(gettext("%(name)s: choose a type.") % {"name": name[:70]})
    return attributes


def _kind(value: Any) -> str:
    if isinstance(value, list):
        numeric = bool(value) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        )
        return NUMBER_LIST if numeric else TEXT_LIST
    if isinstance(value, int | float) and not isinstance(value, bool):
        return NUMBER
    return TEXT


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def rows_from_attributes(
    attributes: Mapping[str, Any] | None,
    sources: Mapping[str, str] | None = None,
    *,
    blank: int = BLANK_ROWS,
) -> list[Row]:
    """The rows a form shows for ``attributes`` (sorted by name), then ``blank`` empty ones to add more."""
    rows = [
        Row(name, _kind(value), _text(value), (sources or {}).get(name, ""))
        for name, value in sorted((attributes or {}).items())
    ]
    return rows + [Row("", TEXT, "") for _ in range(blank)]


__all__ = ["TYPES", "Row", "attributes_from_rows", "rows_from_attributes"]
