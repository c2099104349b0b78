"""The wheel carries every sub-package and data file the code reads (pyproject lists them by
hand because hw_specs/ and workloads/ are mapped into the package from the top level)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_sub_package_is_listed():
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "perfscope").rglob("__init__.py") if "__pycache__" not in p.parts}
    assert found - set(CONF["packages"]) == set()


def test_every_data_file_in_the_package_is_shipped():
    data = CONF["package-data"]
    missing = []
    for p in (ROOT / "perfscope").rglob("*"):
        if not p.is_file() or p.suffix in (".py", ".pyc") or "__pycache__" in p.parts:
            continue
        pkg = ".".join(p.parent.relative_to(ROOT).parts)
        if not any(fnmatch.fnmatch(p.name, pat) for pat in data.get(pkg, [])):
            missing.append(str(p.relative_to(ROOT)))
    assert missing == []


def test_built_in_specs_are_shipped():
    data = CONF["package-data"]
    for pkg, top in (("perfscope.hw_specs", "hw_specs"), ("perfscope.workloads", "workloads")):
        assert CONF["package-dir"][pkg] == top
        files = [p.relative_to(ROOT / top) for p in (ROOT / top).rglob("*")
                 if p.is_file() and p.suffix in (".toml", ".json") and p.name != "references.json"]
        assert files
        for f in files:
            assert any(fnmatch.fnmatch(str(f), pat) for pat in data[pkg]), f
