"""Find and load built-in or user specs by name or path."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from perfscope.errors import NotFoundError, SpecError
from perfscope.specs._toml import read_toml
from perfscope.specs.hardware import HardwareSpec, LinkSpec, parse_hw, parse_link, spec_dirs

LOCAL_NAME = "local"


def local_spec_path() -> Path:
    """Where ``perfscope bench ceilings --save local`` writes the measured spec of this machine
    and ``--hw local`` reads it: $PERFSCOPE_LOCAL_HW, else
    $XDG_CACHE_HOME/perfscope/local.toml (~/.cache/perfscope/local.toml)."""
    import os

    env = os.environ.get("PERFSCOPE_LOCAL_HW")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "perfscope" / f"{LOCAL_NAME}.toml"


def _looks_like_path(name: str) -> bool:
    return name.endswith((".toml", ".json")) or "/" in name or "\\" in name


def _candidates(sub: str) -> list[Path]:
    out: list[Path] = []
    for d in spec_dirs():
        # user folders may hold files flat or in gpus/ and links/ like the built-in one
        for folder in (d / sub, d):
            if folder.is_dir():
                out.extend(sorted(folder.glob("*.toml")))
    return out


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(" ", "-")


@lru_cache(maxsize=64)
def load_link_file(path: str) -> LinkSpec:
    """The link spec in ``path`` (cached per path: specs are immutable once read)."""
    return parse_link(read_toml(Path(path)), path)


def load_link(name: str) -> LinkSpec:
    if _looks_like_path(name):
        p = Path(name)
        if not p.is_file():
            raise NotFoundError(f"link spec file {name} does not exist; check the path")
        return load_link_file(str(p))
    key = _norm(name)
    for p in _candidates("links"):
        if _norm(p.stem) == key:
            return load_link_file(str(p))
    names = ", ".join(sorted({p.stem for p in _candidates("links")}))
    raise NotFoundError(f"unknown link {name!r}; built-in links: {names}")


def _resolve_link(value: str, file: str, field: str) -> LinkSpec:
    try:
        if _looks_like_path(value) and not Path(value).is_absolute():
            value = str(Path(file).parent / value)
        return load_link(value)
    except NotFoundError as e:
        raise SpecError(file, field, str(e)) from None


@lru_cache(maxsize=64)
def load_hw_file(path: str) -> HardwareSpec:
    """The device spec in ``path`` (cached per path: specs are immutable once read)."""
    return parse_hw(read_toml(Path(path)), path, _resolve_link)


def hw_files() -> list[Path]:
    return [p for p in _candidates("gpus") if p.parent.name != "links"]


def load_hw(name: str) -> HardwareSpec:
    """A built-in device by name or alias (``h100-sxm``, ``H100``), or a TOML file path."""
    if _looks_like_path(name):
        p = Path(name)
        if not p.is_file():
            raise NotFoundError(f"--hw {name}: file does not exist; check the path or use a "
                                "built-in name (perfscope hw list)")
        return load_hw_file(str(p))
    key = _norm(name)
    if key == LOCAL_NAME:
        p = local_spec_path()
        if not p.is_file():
            raise NotFoundError(f"--hw local: no measured spec of this machine at {p}; run "
                                "`perfscope bench ceilings --save local` first")
        return load_hw_file(str(p))
    files = hw_files()
    for p in files:
        if _norm(p.stem) == key:
            return load_hw_file(str(p))
    for p in files:
        spec = load_hw_file(str(p))
        if key in {_norm(a) for a in spec.aliases}:
            return spec
    raise NotFoundError(f"--hw {name!r} is not a built-in device; choose one of "
                        f"{', '.join(p.stem for p in files)} or pass a spec .toml file")


def list_hw() -> list[HardwareSpec]:
    return [load_hw_file(str(p)) for p in hw_files()]


def list_links() -> list[LinkSpec]:
    return [load_link_file(str(p)) for p in _candidates("links") if p.parent.name == "links"]
