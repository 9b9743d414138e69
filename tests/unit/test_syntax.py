"""The lexer and parser against libxlu's grammar, and the corpus round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.corpus_files import ALL_FILES, ident
from xenkit.config.configfile import ConfigFile
from xenkit.config.errors import ConfigError
from xenkit.config.lexer import T, tokenize
from xenkit.config.syntax import parse_document
from xenkit.config.values import evaluate, plain


def meaning(text: str) -> dict[str, object]:
    doc = parse_document(text)
    doc.raise_errors()
    settings, errors = evaluate(doc)
    if errors:
        raise errors[0]
    return {k: plain(s.value) for k, s in settings.items()}


@pytest.mark.parametrize("path", ALL_FILES, ids=ident)
def test_corpus_round_trips_byte_for_byte(path: Path) -> None:
    data = path.read_bytes()
    cfg = ConfigFile.read(path)
    assert cfg.text().encode("utf-8", "surrogateescape") == data


def test_tokens_concatenate_to_input() -> None:
    text = "a = [ 'x' , # c\n 1 ]\n\tb+= \"y\" ;c=0x1f\n"
    assert "".join(t.text for t in tokenize(text)) == text


def test_token_positions_are_one_based() -> None:
    toks = [t for t in tokenize("a = 1\n  bb = 'x'\n") if t.kind is T.IDENT]
    assert [(t.text, t.line, t.column) for t in toks] == [("a", 1, 1), ("bb", 2, 3)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a = 1\n", {"a": "1"}),
        ("a = 1", {"a": "1"}),
        ("a = 'x'; b = \"y\"\n", {"a": "x", "b": "y"}),
        ("a = 1\na = 2\n", {"a": "2"}),
        ("a = 'x'\na += 'y'\n", {"a": "xy"}),
        ("a = [ 'x' ]\na += [ 'y', 'z' ]\n", {"a": ["x", "y", "z"]}),
        ("a += 'y'\n", {"a": "y"}),
        ("a = [\n 'x',\n # comment\n 'y',\n]\n", {"a": ["x", "y"]}),
        ("a = []\n", {"a": []}),
        ("a = [ [ '1', 2 ], [] ]\n", {"a": [["1", "2"], []]}),
        ("a = 0x1f\n", {"a": "0x1f"}),
        ("a.b_c9 = 1 # trailing comment\n", {"a.b_c9": "1"}),
        ("\n\n;;\n", {}),
    ],
)
def test_meaning(text: str, expected: dict[str, object]) -> None:
    assert meaning(text) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r'"a\"b"', 'a"b'),
        (r"'a\'b'", "a'b"),
        (r'"\\"', "\\"),
        (r'"\a\b\f\n\r\t\v"', "\a\b\f\n\r\t\v"),
        (r'"x\101y"', "xy"),
        (r'"\1 2z"', "z"),
        ("'tab\there'", "tab\there"),
    ],
)
def test_string_escapes_as_libxlu_reads_them(text: str, value: str) -> None:
    assert meaning(f"k = {text}\n") == {"k": value}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('k = "\\x41"\n', "hex numerical character escape"),
        ('k = "\\12"\n', "octal numerical character escape"),
        ('k = "\\q"\n', "invalid character after backslash"),
    ],
)
def test_bad_escapes_are_rejected(text: str, reason: str) -> None:
    doc = parse_document(text)
    assert doc.errors
    assert reason in doc.errors[0].reason


@pytest.mark.parametrize(
    ("text", "line", "column", "reason"),
    [
        ("Name = 'x'\n", 1, 1, "lexical error"),
        ("a = 1\r\n", 1, 6, "lexical error"),
        ("a = 1\n# no newline at the end", 2, 1, "lexical error"),
        ("memory = 512M\n", 1, 13, "lexical error"),
        ("a =\n", 1, 4, "unexpected NEWLINE"),
        ("a = 1 2\n", 1, 7, "unexpected NUMBER"),
        ("a = [ 1 2 ]\n", 1, 9, "unexpected NUMBER"),
        ("a = [ , ]\n", 1, 7, "unexpected ','"),
        ("a = [ 1\n", 2, 1, "unexpected end of file"),
        ("= 1\n", 1, 1, "unexpected '='"),
        ("a 1\n", 1, 3, "unexpected NUMBER"),
        ("a = 'unterminated\n", 1, 5, "lexical error"),
    ],
)
def test_errors_carry_line_column_and_reason(
    text: str, line: int, column: int, reason: str
) -> None:
    doc = parse_document(text, "vm.cfg")
    assert doc.errors, text
    err = doc.errors[0]
    assert (err.location.line, err.location.column) == (line, column)
    assert reason in err.reason
    assert str(doc) == text


def test_error_message_quotes_the_offending_text() -> None:
    doc = parse_document("memory = 512M\n", "vm.cfg")
    assert str(doc.errors[0]) == "vm.cfg:1:13: lexical error near `M'"


def test_python_configs_get_a_hint() -> None:
    doc = parse_document("import os\nkernel = os.getcwd() + '/k'\n", "xm.cfg")
    assert doc.errors
    assert any("Python" in (e.hint or "") for e in doc.errors)


def test_recovery_finds_every_broken_line() -> None:
    doc = parse_document("a = 1 2\nb = 'ok'\nc =\nd = 4\n")
    assert [e.location.line for e in doc.errors] == [1, 3]
    assert [a.key for a in doc.assignments] == ["b", "d"]


def test_append_type_mismatch_is_an_error() -> None:
    with pytest.raises(ConfigError, match="can't add"):
        meaning("a = 'x'\na += [ 'y' ]\n")


def test_syntax_errors_raise_from_settings() -> None:
    cfg = ConfigFile.from_text("a = \n")
    with pytest.raises(ConfigError):
        cfg.settings()
