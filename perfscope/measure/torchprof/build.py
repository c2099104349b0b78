"""Build what is profiled: a transformers model from a config.json (random weights, nothing
downloaded), or the user's own module from a factory function.

The factory contract (``--module pkg.mod:factory`` or ``path/to/file.py:factory``): a function
called with no arguments (or with ``device=`` and ``dtype=`` keyword arguments when its
signature has them) that returns either

- ``(module, inputs)``: an ``nn.Module`` and its example inputs: one tensor, a tuple/list of
  positional arguments, or a dict of keyword arguments; or
- a dict: ``{"module": nn.Module, "args": tuple, "kwargs": dict, "name": str}``; only
  ``module`` is required.

perfscope moves the module and every tensor input to ``--device`` (and floating tensors to the
dtype, when the factory did not take ``dtype``), runs ``module(*args, **kwargs)`` under
``torch.inference_mode()``, and profiles that call as the phase ``forward``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfscope.errors import InputError, MeasureError

TORCH_DTYPES = ("fp32", "bf16", "fp16")
_POOL = 1_000_003  # prime: tiled rows of different widths do not line up
_DROP = ("quantization_config", "auto_map", "_name_or_path", "architectures")


def torch_dtype(name: str) -> Any:
    import torch

    if name not in TORCH_DTYPES:
        raise InputError(f"--dtype {name!r}: the torch profiler runs fp32, bf16 or fp16")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def hf_config_dict(config: Mapping[str, Any], layers: int | None) -> dict[str, Any]:
    """The config as transformers should build it: perfscope's own keys and quantization
    dropped, ``num_hidden_layers`` (and per-layer lists) cut to ``layers``."""
    cfg = {k: v for k, v in config.items() if not k.startswith("_perfscope") and k not in _DROP}
    if layers is not None:
        if layers < 1:
            raise InputError(f"--layers {layers}: must be >= 1")
        key = "num_hidden_layers" if "num_hidden_layers" in cfg else "n_layer"
        have = cfg.get(key)
        if isinstance(have, int) and layers > have:
            raise InputError(f"--layers {layers}: the model has only {have} layers")
        cfg[key] = layers
        if isinstance(cfg.get("layer_types"), list):
            cfg["layer_types"] = cfg["layer_types"][:layers]
    return cfg


def build_hf_model(cfg: Mapping[str, Any], *, device: str, dtype: str, attn: str) -> Any:
    """A transformers causal LM from a config dict, random weights, in eval mode on
    ``device``. Weights are a tiled N(0, 0.02) pool (norm scales 1, biases 0): built at memory
    speed, and dense kernels do not run faster or slower for particular values."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if attn not in ("sdpa", "eager"):
        raise InputError(f"--attn-impl {attn!r}: use sdpa or eager")
    kw = dict(cfg)
    model_type = kw.pop("model_type", None)
    if not model_type:
        raise InputError("the config has no model_type; pass a Hugging Face config.json")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf_cfg = AutoConfig.for_model(model_type, **kw)
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"transformers cannot build a {model_type!r} config: "
                         f"{' '.join(str(e).split())[:200]}") from None
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers: pay for the default initialisation
        from contextlib import nullcontext as no_init_weights  # type: ignore[assignment]
    dt = torch_dtype(dtype)
    try:
        with warnings.catch_warnings(), no_init_weights(), torch.device(device):
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_config(hf_cfg, attn_implementation=attn, dtype=dt)
    except torch.OutOfMemoryError as e:
        raise MeasureError(f"the model does not fit on {device}; pass --layers with fewer "
                           "layers") from e
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"transformers cannot build {model_type!r}: "
                         f"{' '.join(str(e).split())[:200]}") from None
    if hasattr(model, "tie_weights"):  # no_init_weights also skips the tying in post_init
        model.tie_weights()
    fill_random(model)
    return model.eval()


def fill_random(model: Any, seed: int = 0) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    pools: dict[tuple[Any, Any], Any] = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() < 2:
                p.fill_(0.0 if name.endswith("bias") else 1.0)
                continue
            key = (p.device, p.dtype)
            pool = pools.get(key)
            if pool is None:
                pool = pools[key] = (torch.randn(_POOL, generator=g) * 0.02).to(p.device, p.dtype)
            flat = p.view(-1)
            for start in range(0, flat.numel(), _POOL):
                n = min(_POOL, flat.numel() - start)
                shift = (start // _POOL * 7919) % (_POOL - n + 1)
                flat[start:start + n].copy_(pool[shift:shift + n])


# ---- the user's own module -----------------------------------------------------------------

@dataclass
class UserModule:
    module: Any
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = ""


def load_factory(spec: str) -> Any:
    """``pkg.mod:factory`` or ``path/to/file.py:factory`` -> the function."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise InputError(f"--module {spec!r}: expected pkg.module:factory or file.py:factory")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise InputError(f"--module {spec}: file {target} does not exist")
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        if mod_spec is None or mod_spec.loader is None:
            raise InputError(f"--module {spec}: cannot import {target}")
        mod = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(mod)
        except Exception as e:
            raise InputError(f"--module {spec}: importing {target} failed: "
                             f"{type(e).__name__}: {e}") from None
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # like `python -m`: modules of the current folder
        try:
            mod = importlib.import_module(target)
        except ImportError as e:
            raise InputError(f"--module {spec}: cannot import {target} ({e}); check the name "
                             "and that it is importable from the current folder") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise InputError(f"--module {spec}: {target} has no function {attr!r}")
    return fn


def call_factory(spec: str, *, device: str, dtype: str) -> UserModule:
    """Call the factory and check its answer against the contract (see the module doc)."""
    import torch

    fn = load_factory(spec)
    params = inspect.signature(fn).parameters
    kw: dict[str, Any] = {}
    if "device" in params:
        kw["device"] = device
    if "dtype" in params:
        kw["dtype"] = torch_dtype(dtype)
    try:
        got = fn(**kw)
    except Exception as e:
        raise MeasureError(f"--module {spec}: the factory raised {type(e).__name__}: "
                           f"{' '.join(str(e).split())[:200]}") from None
    contract = ("return (module, inputs) or {'module': ..., 'args': (...), 'kwargs': {...}}")
    if isinstance(got, Mapping):
        unknown = set(got) - {"module", "args", "kwargs", "name"}
        if "module" not in got or unknown:
            raise InputError(f"--module {spec}: the factory's dict must have 'module' and "
                             f"only args/kwargs/name (got {sorted(got)}); {contract}")
        um = UserModule(got["module"], tuple(got.get("args") or ()),
                        dict(got.get("kwargs") or {}), str(got.get("name") or ""))
    elif isinstance(got, tuple) and len(got) == 2:
        module, inputs = got
        if isinstance(inputs, Mapping):
            um = UserModule(module, (), dict(inputs))
        elif isinstance(inputs, (tuple, list)):
            um = UserModule(module, tuple(inputs))
        else:
            um = UserModule(module, (inputs,))
    else:
        raise InputError(f"--module {spec}: the factory returned {type(got).__name__}; "
                         f"{contract}")
    if not isinstance(um.module, torch.nn.Module):
        raise InputError(f"--module {spec}: the factory's module is a "
                         f"{type(um.module).__name__}, not a torch.nn.Module; {contract}")
    um.name = um.name or f"{spec} ({type(um.module).__name__})"
    cast = None if "dtype" in params else torch_dtype(dtype)
    um.module = um.module.to(device=device, dtype=cast).eval() if cast is not None else \
        um.module.to(device).eval()
    um.args = tuple(_move(a, device, cast) for a in um.args)
    um.kwargs = {k: _move(v, device, cast) for k, v in um.kwargs.items()}
    return um


def _move(x: Any, device: str, dtype: Any) -> Any:
    import torch

    if isinstance(x, torch.Tensor):
        if dtype is not None and x.is_floating_point():
            return x.to(device=device, dtype=dtype)
        return x.to(device)
    if isinstance(x, (list, tuple)):
        return type(x)(_move(v, device, dtype) for v in x)
    if isinstance(x, dict):
        return {k: _move(v, device, dtype) for k, v in x.items()}
    return x
