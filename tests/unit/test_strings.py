"""C numbers (strtol base 0) and string quoting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenkit.config.strings import LONG_MAX, NumberError, c_long, dequote, quote


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("42", 42),
        ("010", 8),
        ("0x1f", 31),
        ("0X1F", 31),
        ("-1", -1),
        ("+7", 7),
        (" 12", 12),
        ("\t0x10", 16),
        (str(LONG_MAX), LONG_MAX),
    ],
)
def test_c_long_reads_like_strtol_base_0(text: str, value: int) -> None:
    assert c_long(text) == value


@pytest.mark.parametrize("text", ["", "08", "0x", "12abc", "1 ", "512M", "-", "0xg", "1.5"])
def test_c_long_rejects_what_xl_rejects(text: str) -> None:
    with pytest.raises(NumberError, match="not a valid number"):
        c_long(text)


def test_c_long_range() -> None:
    with pytest.raises(NumberError, match="out of range"):
        c_long(str(LONG_MAX + 1))


@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_quote_round_trips_through_dequote(value: str) -> None:
    assert dequote(quote(value)) == value


def test_quote_prefers_double_quotes() -> None:
    assert quote("abc") == '"abc"'
    assert quote('say "hi"') == "'say \"hi\"'"
    assert quote('it\'s "x"') == '"it\'s \\"x\\""'
