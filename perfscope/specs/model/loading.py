"""Find and read model configs: built-in names (workloads/models) or config.json paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from perfscope.errors import NotFoundError, SpecError
from perfscope.specs.model.adapters import model_from_config
from perfscope.specs.model.types import ModelSpec


def read_config(path: Path) -> dict[str, Any]:
    from perfscope.specs._toml import read_text

    text = read_text(path, "a config.json file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(str(path), None, f"invalid JSON at line {e.lineno} column {e.colno}",
                        "fix the syntax") from None
    if not isinstance(data, dict):
        raise SpecError(str(path), None, "expected a JSON object", "pass a config.json file")
    return data


def model_dirs() -> list[Path]:
    import os

    here = Path(__file__).resolve().parents[2]  # perfscope/
    dirs = [d for d in (here / "workloads" / "models", here.parent / "workloads" / "models")
            if d.is_dir()][:1]
    extra = os.environ.get("PERFSCOPE_SPEC_PATH", "")
    dirs += [Path(p) for p in extra.split(os.pathsep) if p]
    return dirs


def model_files() -> list[Path]:
    return [p for d in model_dirs() for p in sorted(d.glob("*.json"))]


def load_model(name: str) -> ModelSpec:
    """A built-in model by name (``llama-3.1-8b``), or a path to a config.json."""
    p = Path(name)
    if name.endswith(".json") or p.is_dir() or "/" in name:
        if p.is_dir():
            if not (p / "config.json").is_file():
                raise NotFoundError(f"model {name!r}: the folder has no config.json; pass the "
                                    "config.json of a Hugging Face model (--model)")
            p = p / "config.json"
        if not p.is_file():
            raise NotFoundError(f"model {name!r}: file does not exist; check the path or use "
                                "a built-in name (perfscope models list) (--model)")
        stem = p.parent.name if p.name == "config.json" else p.stem
        return model_from_config(read_config(p), stem, str(p))
    key = name.lower().replace("_", "-")
    for f in model_files():
        if f.stem.lower() == key:
            return model_from_config(read_config(f), f.stem, str(f))
    names = ", ".join(f.stem for f in model_files())
    raise NotFoundError(f"model {name!r} is not built in; choose one of {names} "
                        "or pass a config.json path (--model)")
