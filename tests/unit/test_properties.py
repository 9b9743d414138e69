"""Property tests: any valid file round-trips, and fmt keeps its meaning."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.unit.corpus_files import CONFIG_FILES, ident
from tests.unit.strategies import config_text
from xenkit.config.configfile import ConfigFile
from xenkit.config.reader import read_settings
from xenkit.config.syntax import ListValue, parse_document
from xenkit.config.values import Scalar, Setting, Value, evaluate, plain

SETTINGS = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])


def meaning(text: str) -> dict[str, object]:
    cfg = ConfigFile.from_text(text)
    assert not cfg.errors, (text, [str(e) for e in cfg.errors])
    values, errors = evaluate(cfg.doc)
    assert not errors, [str(e) for e in errors]
    return {k: plain(s.value) for k, s in values.items()}


@SETTINGS
@given(config_text())
def test_generated_configs_round_trip(text: str) -> None:
    assert ConfigFile.from_text(text).text() == text


@SETTINGS
@given(config_text())
def test_fmt_keeps_meaning(text: str) -> None:
    formatted = ConfigFile.from_text(text).formatted()
    assert meaning(formatted) == meaning(text)


@SETTINGS
@given(config_text())
def test_fmt_is_idempotent(text: str) -> None:
    once = ConfigFile.from_text(text).formatted()
    assert ConfigFile.from_text(once).formatted() == once


@SETTINGS
@given(config_text())
def test_fmt_output_is_canonical(text: str) -> None:
    out = ConfigFile.from_text(text).formatted()
    assert out == "" or out.endswith("\n")
    assert "\n\n\n" not in out
    assert all(line == line.rstrip() for line in out.split("\n"))
    assert not out.startswith("\n")


def full_meaning(text: str) -> dict[str, tuple[object, ...]] | None:
    doc = parse_document(text, "f.cfg")
    if doc.errors:
        return None
    values, errors = evaluate(doc)
    if errors:
        return None
    return {k: _observable(s) for k, s in values.items()}


def _observable(s: Setting) -> tuple[object, ...]:
    return (plain(s.value), _locations(s.value), s.appended, s.assigned)


def _locations(v: Value) -> object:
    if isinstance(v, Scalar):
        return tuple(v.location)
    return (tuple(v.location), [_locations(i) for i in v.items])


def fast_meaning(text: str) -> dict[str, tuple[object, ...]] | None:
    fast = read_settings(text, "f.cfg")
    return None if fast is None else {k: _observable(s) for k, s in fast.items()}


@SETTINGS
@given(config_text())
def test_fast_reader_agrees_with_the_full_parser(text: str) -> None:
    fast = fast_meaning(text)
    if fast is not None:
        assert fast == full_meaning(text)


@SETTINGS
@given(config_text())
def test_fast_reader_declines_only_nested_lists(text: str) -> None:
    doc = parse_document(text)
    if doc.errors or evaluate(doc)[1]:
        return
    nested = any(
        isinstance(item, ListValue)
        for a in doc.assignments
        if isinstance(a.value, ListValue)
        for item in a.value.items
    )
    assert (read_settings(text, "f.cfg") is None) == nested


@pytest.mark.parametrize("path", CONFIG_FILES, ids=ident)
def test_fast_reader_agrees_on_the_corpus(path: Path) -> None:
    text = path.read_text()
    fast = fast_meaning(text)
    full = full_meaning(text)
    if full is None:
        assert fast is None
    elif fast is not None:
        assert fast == full


@pytest.mark.parametrize(
    "text",
    [
        "a = 1 # comment at the end, no newline",
        "A = 1\n",
        "a = 1\r\n",
        "a = 0x1F\n",
        "a = [ 'x' 'y' ]\n",
        "a = [ , ]\n",
        "a = 'x'\na += [ 'y' ]\n",
        'a = "\\x41"\n',
        "a = [ [ 'nested' ] ]\n",
    ],
)
def test_fast_reader_declines_what_it_must(text: str) -> None:
    assert read_settings(text, "f.cfg") is None
