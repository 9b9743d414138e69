"""Lossless edits: on every corpus file, an edit changes only what it edits."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from tests.unit.corpus_files import CONFIG_FILES, ident
from xenkit.config import ConfigFile
from xenkit.config.values import plain
from xenkit.core.errors import UsageError

VALID = [p for p in CONFIG_FILES if not ConfigFile.read(p).doc.errors]


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    removed, added = [], []
    for line in difflib.ndiff(before.splitlines(True), after.splitlines(True)):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    return removed, added


def meaning(cfg: ConfigFile) -> dict[str, object]:
    reparsed = ConfigFile.from_text(cfg.text())
    return {k: plain(s.value) for k, s in reparsed.settings().items()}


@pytest.mark.parametrize("path", VALID, ids=ident)
def test_set_memory_touches_one_line(path: Path) -> None:
    cfg = ConfigFile.read(path)
    before = cfg.text()
    had = "memory" in cfg.settings()
    cfg.set("memory", 777)
    removed, added = changed_lines(before, cfg.text())
    assert len(added) == 1
    assert "777" in added[0]
    assert len(removed) == (1 if had else 0)
    expected = {k: plain(s.value) for k, s in ConfigFile.from_text(before).settings().items()}
    expected["memory"] = "777"
    assert meaning(cfg) == expected


@pytest.mark.parametrize("path", [p for p in VALID if ConfigFile.read(p).settings()], ids=ident)
def test_unset_removes_only_that_key(path: Path) -> None:
    cfg = ConfigFile.read(path)
    before_meaning = meaning(cfg)
    key = next(iter(before_meaning))
    before = cfg.text()
    cfg.unset(key)
    removed, added = changed_lines(before, cfg.text())
    assert removed
    assert key in removed[0]
    assert all(line[:1] in " \t]" for line in removed[1:])
    expected = dict(before_meaning)
    del expected[key]
    assert meaning(cfg) == expected
    if ";" in removed[0]:
        assert len(added) == 1
        assert f"{key}=" not in added[0].replace(" ", "")
    else:
        assert added == []


@pytest.mark.parametrize(
    "path", [p for p in VALID if "disk" in ConfigFile.read(p).settings()], ids=ident
)
def test_append_and_replace_one_disk(path: Path) -> None:
    cfg = ConfigFile.read(path)
    before = cfg.text()
    disks = plain(cfg.settings()["disk"].value)
    assert isinstance(disks, list)
    cfg.append("disk", "/srv/new.img,raw,xvdz,rw")
    removed, added = changed_lines(before, cfg.text())
    assert "".join(added).count("/srv/new.img") == 1
    assert len(removed) <= 1
    assert plain(ConfigFile.from_text(cfg.text()).settings()["disk"].value) == [
        *disks,
        "/srv/new.img,raw,xvdz,rw",
    ]
    cfg2 = ConfigFile.read(path)
    cfg2.replace_item("disk", 0, "/srv/other.img,raw,xvda,rw")
    new = plain(ConfigFile.from_text(cfg2.text()).settings()["disk"].value)
    assert new == ["/srv/other.img,raw,xvda,rw", *disks[1:]]
    removed, added = changed_lines(before, cfg2.text())
    assert len(removed) == len(added) == 1


@pytest.mark.parametrize(
    ("text", "index", "expected"),
    [
        ("d = [ 'a', 'b', 'c' ]\n", 0, "d = [ 'b', 'c' ]\n"),
        ("d = [ 'a', 'b', 'c' ]\n", 1, "d = [ 'a', 'c' ]\n"),
        ("d = [ 'a', 'b', 'c' ]\n", 2, "d = [ 'a', 'b' ]\n"),
        ("d = [ 'a',\n  'b',  # bc\n  # own\n  'c',\n]\n", 1, "d = [ 'a',\n  # own\n  'c',\n]\n"),
        ("d = [ 'a',\n  'b',\n]\n", -1, "d = [ 'a',\n]\n"),
        ("d = [ 'a',\n 'b' ]\n", 1, "d = [ 'a' ]\n"),
    ],
)
def test_remove_item_layouts(text: str, index: int, expected: str) -> None:
    cfg = ConfigFile.from_text(text)
    cfg.remove_item("d", index)
    assert cfg.text() == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("d = [ 'a' ]\n", "d = [ 'a', \"n\" ]\n"),
        ("d = [ 'a', ]\n", "d = [ 'a', \"n\" ]\n"),
        ("d = []\n", 'd = [ "n" ]\n'),
        ("d = [\n    'a',\n]\n", "d = [\n    'a',\n    \"n\",\n]\n"),
        ("d = [\n    'a'\n]\n", "d = [\n    'a',\n    \"n\",\n]\n"),
        ("x = 1\n", 'x = 1\nd = [ "n" ]\n'),
    ],
)
def test_append_follows_the_list_layout(text: str, expected: str) -> None:
    cfg = ConfigFile.from_text(text)
    cfg.append("d", "n")
    assert cfg.text() == expected


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("a = 1; b = 2\n", "a", "b = 2\n"),
        ("a = 1; b = 2\n", "b", "a = 1;\n"),
        ("a = 1 # c\nb = 2\n", "a", "b = 2\n"),
        ("a = 1\nb = 2\na += 3\n", "a", "b = 2\n"),
        ("x = 1\na = [\n 'p',\n]\ny = 2\n", "a", "x = 1\ny = 2\n"),
    ],
)
def test_unset_layouts(text: str, key: str, expected: str) -> None:
    cfg = ConfigFile.from_text(text)
    cfg.unset(key)
    assert cfg.text() == expected


def test_set_after_append_makes_it_plain() -> None:
    cfg = ConfigFile.from_text("extra = 'a'\nextra += ' b'\n")
    cfg.set("extra", "z")
    assert cfg.text() == "extra = 'a'\nextra = \"z\"\n"
    assert meaning(cfg) == {"extra": "z"}


def test_set_keeps_a_file_without_final_newline_valid() -> None:
    cfg = ConfigFile.from_text("a = 1")
    cfg.set("b", 2)
    assert cfg.text() == "a = 1\nb = 2\n"


def test_negative_numbers_become_strings() -> None:
    cfg = ConfigFile.from_text("")
    cfg.set("cap", -1)
    assert cfg.text() == 'cap = "-1"\n'


def test_list_edits_need_a_list() -> None:
    cfg = ConfigFile.from_text("d = 'x'\n")
    with pytest.raises(UsageError, match="not a list"):
        cfg.append("d", "y")
    with pytest.raises(UsageError, match="no item 3"):
        ConfigFile.from_text("d = [ 'x' ]\n").replace_item("d", 3, "y")
