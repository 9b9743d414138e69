"""The dom0 zipapp: standard library only, reproducible, and it runs."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from xenkit.host.zipapp import BUILD_INFO, build_dom0_app

#: What dom0 has besides the standard library (ARCHITECTURE.md: "Where code runs").
DOM0_EXTRAS = {"xen"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dom0_app(cache_dir=tmp_path_factory.mktemp("dom0")).path


def _imports(tree: ast.AST, module: str) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in a module."""
    package = module.rpartition(".")[0] if not module.endswith("__init__") else module
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((name, node.lineno))
    return found


def test_zipapp_imports_only_the_standard_library(app: Path) -> None:
    with zipfile.ZipFile(app) as zf:
        sources = {n: zf.read(n).decode() for n in zf.namelist() if n.endswith(".py")}
    modules = {n.removesuffix(".py").replace("/", ".").removesuffix(".__init__") for n in sources}
    assert {"xenkit", "xenkit.core.errors", "xenkit.dom0.__main__", "xenkit.host.qmp"} <= modules
    bad = []
    for name, text in sources.items():
        module = name.removesuffix(".py").replace("/", ".")
        for imported, line in _imports(ast.parse(text, name), module):
            top = imported.split(".")[0]
            if top == "xenkit":
                if imported not in modules and imported.rpartition(".")[0] not in modules:
                    bad.append(f"{name}:{line}: {imported} is not in the archive")
            elif top not in sys.stdlib_module_names and top not in DOM0_EXTRAS:
                bad.append(f"{name}:{line}: {imported} is not in the standard library")
    assert not bad, "\n".join(bad)


def test_zipapp_is_reproducible_and_cached(app: Path, tmp_path: Path) -> None:
    again = build_dom0_app(cache_dir=tmp_path)
    assert again.path != app and again.path.read_bytes() == app.read_bytes()
    assert build_dom0_app(cache_dir=tmp_path).path == again.path
    assert app.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(io.BytesIO(app.read_bytes())) as zf:
        info = json.loads(zf.read(BUILD_INFO))
    assert info["source_hash"] == again.source_hash


def test_zipapp_runs_version_and_selftest(app: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-I", str(app), "version"], capture_output=True, text=True, check=True
    )
    version = json.loads(out.stdout)
    assert version["xenkit"] and len(version["build"]) == 64
    test = subprocess.run(
        [sys.executable, "-I", str(app), "selftest", "--json"], capture_output=True, text=True
    )
    report = json.loads(test.stdout)
    assert test.returncode == 0 and report["ok"], test.stdout
    names = {c["name"] for c in report["checks"]}
    assert {"import xenkit.host.qmp", "import xenkit.core.errors", "dom0"} <= names
