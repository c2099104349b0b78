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


# hub id suffixes of fine-tuned variants with the base model's architecture
_VARIANT_SUFFIXES = ("-instruct", "-it", "-chat")


def _hub_key(hub_id: str) -> str:
    key = hub_id.strip().lower()
    for suffix in _VARIANT_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def _by_hub_id(name: str) -> Path | None:
    """The built-in config whose ``_name_or_path`` is the Hugging Face hub id ``name``
    (``Qwen/Qwen3-32B``), or, for an instruct / chat variant, its base model's."""
    if name.count("/") != 1 or name.startswith((".", "/")) or name.endswith(".json"):
        return None
    exact, base = name.strip().lower(), _hub_key(name)
    matches = []
    for f in model_files():
        cfg = read_config(f)
        # the config's own hub id, then those of checkpoints it documents as the same
        # architecture (DeepSeek-R1 for DeepSeek-V3), with the source beside them
        for hub in (str(cfg.get("_name_or_path", "")),
                    *map(str, cfg.get("_perfscope_same_architecture", []))):
            if hub.lower() == exact:
                return f
            if hub and _hub_key(hub) == base:
                matches.append(f)
    return matches[0] if len(set(matches)) == 1 else None


def load_model(name: str) -> ModelSpec:
    """A built-in model by name (``llama-3.1-8b``) or Hugging Face hub id
    (``meta-llama/Llama-3.1-8B``, offline: the built-in copy of its config), or a path to a
    config.json (a file or a folder holding one)."""
    p = Path(name)
    if name.endswith(".json") or p.is_dir() or "/" in name:
        if p.is_dir():
            if not (p / "config.json").is_file():
                raise NotFoundError(f"model {name!r}: the folder has no config.json; pass the "
                                    "config.json of a Hugging Face model (--model)")
            p = p / "config.json"
        if not p.is_file():
            found = _by_hub_id(name)
            if found is not None:
                return model_from_config(read_config(found), found.stem, str(found))
            raise NotFoundError(f"model {name!r}: file does not exist; check the path or use "
                                "a built-in name or its hub id (perfscope models list) "
                                "(--model)")
        stem = p.parent.name if p.name == "config.json" else p.stem
        return model_from_config(read_config(p), stem, str(p))
    key = name.lower().replace("_", "-")
    for f in model_files():
        if f.stem.lower() == key:
            return model_from_config(read_config(f), f.stem, str(f))
    names = ", ".join(f.stem for f in model_files())
    raise NotFoundError(f"model {name!r} is not built in; choose one of {names} "
                        "or pass a config.json path (--model)")
