"""Reading [n] markers from answers."""

from __future__ import annotations

import pytest

from inference.citations import cited_numbers, normalize_markers


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ("Twenty days [1].", 3, (1,)),
        ("Both say so [2, 3].", 3, (2, 3)),
        ("Yes [1][4].", 4, (1, 4)),
        ("是的【1】。", 2, (1,)),
        ("See [^1] and [^2].", 2, (1, 2)),
        ("Per [1; 3] and [2,3].", 3, (1, 3, 2)),
        ("Ranges [1-3].", 5, (1, 2, 3)),
        ("Full-width 【1，2】.", 2, (1, 2)),
        ("First [2], then [1], again [2].", 3, (2, 1)),
        ("Nothing cited.", 3, ()),
        ("Out of range [0] [4] [2023] [1990-2020].", 3, ()),
        ("Mixed [2, 9].", 3, (2,)),
        ("Not a marker: [a], [1.5 m], array[i].", 3, ()),
        ("Any [1].", 0, ()),
    ],
)
def test_cited_numbers(text: str, n: int, expected: tuple[int, ...]) -> None:
    assert cited_numbers(text, n) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A【1】 B【2，3】", "A[1] B[2, 3]"),
        ("A [^2].", "A [2]."),
        ("A [1-3].", "A [1, 2, 3]."),
        ("A [2, 3] and [1;2].", "A [2, 3] and [1;2]."),
        ("Year [2023].", "Year [2023]."),
    ],
)
def test_normalize_markers(text: str, expected: str) -> None:
    assert normalize_markers(text, 3) == expected
