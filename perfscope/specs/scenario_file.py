"""Scenario files: a model, a device and a Scenario in one TOML (workloads/scenarios/).

    name = "chat-8b"            # optional, defaults to the file stem
    model = "llama-3.1-8b"      # built-in name or config.json path
    hw = "h100-sxm"             # built-in name or spec .toml path
    phase = "decode"
    batch = 32
    context_len = 2048
    weight_dtype = "bf16"       # and any other Scenario field: seq_len, act_dtype, kv_dtype,
                                # group_size, tp, pp, ep, attn_dp, moe_comm, attention,
                                # fused_norm, mla_absorb, ceiling, memory_reserve

Unknown keys are errors. Relative model/hw paths resolve against the file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from perfscope.errors import NotFoundError, SpecError
from perfscope.specs._toml import Fields, read_toml
from perfscope.specs.scenario import Scenario

_TYPES: dict[str, type | tuple[type, ...]] = {
    "phase": str, "batch": int, "seq_len": int, "context_len": int, "weight_dtype": str,
    "act_dtype": str, "kv_dtype": str, "group_size": int, "tp": int, "pp": int, "ep": int,
    "attn_dp": int, "moe_comm": str,
    "attention": str, "fused_norm": bool, "mla_absorb": bool, "ceiling": str,
    "memory_reserve": (int, float),
}
assert set(_TYPES) == {f.name for f in fields(Scenario)}


@dataclass(frozen=True, slots=True)
class ScenarioFile:
    name: str
    model: str
    hw: str
    values: dict[str, Any]  # the Scenario fields the file sets
    file: str

    def scenario(self, **overrides: Any) -> Scenario:
        return Scenario(**(self.values | overrides))


def scenario_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent.parent
    return [d for d in (here / "workloads" / "scenarios",
                        here.parent / "workloads" / "scenarios") if d.is_dir()][:1]


def scenario_files() -> list[Path]:
    return [p for d in scenario_dirs() for p in sorted(d.glob("*.toml"))]


def load_scenario(name: str) -> ScenarioFile:
    """A built-in scenario by name (``decode-batch1``) or a TOML file path."""
    p = Path(name)
    if not (name.endswith(".toml") or "/" in name):
        found = next((f for f in scenario_files() if f.stem == name), None)
        if found is None:
            names = ", ".join(f.stem for f in scenario_files())
            raise NotFoundError(f"scenario {name!r} is not built in; choose one of {names} "
                                "or pass a .toml path (--scenario)")
        p = found
    elif not p.is_file():
        raise NotFoundError(f"scenario {name!r}: file does not exist; check the path "
                            "(--scenario)")
    f = Fields(read_toml(p), str(p))
    values = {k: f.get(k, t, None) for k, t in _TYPES.items()}
    values = {k: (float(v) if k == "memory_reserve" else v) for k, v in values.items()
              if v is not None}
    model, hw = f.get("model", str), f.get("hw", str)
    title = f.get("name", str, p.stem)
    f.get("notes", str, None)
    f.done()
    base = p.parent
    model = str(base / model) if model.endswith(".json") and not Path(model).is_absolute() \
        else model
    hw = str(base / hw) if hw.endswith(".toml") and not Path(hw).is_absolute() else hw
    if "batch" in values and values["batch"] < 1:
        raise SpecError(str(p), "batch", f"must be >= 1, got {values['batch']}", None)
    return ScenarioFile(title, model, hw, values, str(p))
