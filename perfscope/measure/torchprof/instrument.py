"""Scopes that torch.profiler, FlopCounterMode and a byte counter all see the same way.

Forward hooks keep a stack of the module calls in progress; wrappers around a few functions of
the model's source (rotary, the attention function, repeat_kv, mask construction) and around
the KV cache's ``update`` keep a stack of tags. During a profiled run each scope is also a
``record_function`` range, so the trace shows module names and perfscope can walk the event
tree; during the counting run the same stacks label every FLOP and byte. Outside
``instrument(...)`` the model is untouched: timed runs carry no hooks.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from perfscope.measure.torchprof.ops import is_inplace, normalize, op_class

RANGE_MODULE = "perfscope.module::"
RANGE_FN = "perfscope.fn::"
RANGE_STEP = "perfscope.step::"
ROOT = "(root)"  # the range name of the model's own forward (its path is "")

# functions of a transformers modeling module worth a scope of their own
FUNCTION_TAGS = {
    "apply_rotary_pos_emb": "rotary",
    "eager_attention_forward": "attention",
    "repeat_kv": "repeat_kv",
    "create_causal_mask": "mask",
    "create_sliding_window_causal_mask": "mask",
    "create_masks_for_generate": "mask",
}


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One op call seen by the counting or the timing run: where it ran, what it cost."""

    module: str
    call: int  # id of the module call it ran in
    tag: str | None
    op: str  # normalised name
    index: int  # calls of the same op class before it in (call, tag)
    dim: int | None  # last dimension of its first tensor input
    flops: float = 0.0
    bytes: float = 0.0
    time_s: float = 0.0


@dataclass
class Scopes:
    """The module and tag stacks (hooks and wrappers push and pop)."""

    ranges: bool = False  # also open record_function ranges (profiled runs)
    modules: list[tuple[str, int]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    calls: int = 0
    counts: dict[tuple[int, str | None, str], int] = field(default_factory=dict)
    _open: list[Any] = field(default_factory=list)

    def push_module(self, path: str) -> None:
        self.calls += 1
        self.modules.append((path, self.calls))
        self._enter(RANGE_MODULE + (path or ROOT))

    def pop_module(self) -> None:
        if self.modules:
            self.modules.pop()
            self._exit()

    @contextlib.contextmanager
    def tag(self, name: str) -> Iterator[None]:
        self.tags.append(name)
        self._enter(RANGE_FN + name)
        try:
            yield
        finally:
            self._exit()
            self.tags.pop()

    def where(self, op: str) -> tuple[str, int, str | None, int]:
        """(module, call id, tag, index of this op's class) for a call happening now."""
        module, call = self.modules[-1] if self.modules else ("", 0)
        tag = self.tags[-1] if self.tags else None
        key = (call, tag, op_class(op))
        index = self.counts.get(key, 0)
        self.counts[key] = index + 1
        return module, call, tag, index

    def _enter(self, name: str) -> None:
        if self.ranges:
            import torch

            rf = torch.autograd.profiler.record_function(name)
            rf.__enter__()
            self._open.append(rf)
        else:
            self._open.append(None)

    def _exit(self) -> None:
        rf = self._open.pop() if self._open else None
        if rf is not None:
            rf.__exit__(None, None, None)


def _wrap(fn: Callable, tag: str, scopes: Scopes) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with scopes.tag(tag):
            return fn(*args, **kwargs)

    wrapper.__perfscope_wrapped__ = True  # type: ignore[attr-defined]
    return wrapper


@contextlib.contextmanager
def instrument(model: Any, scopes: Scopes, *, functions: bool = True) -> Iterator[list[str]]:
    """Hooks on every module and wrappers around the known functions of the modules' source
    files, for the duration of the block; yields the names of the functions wrapped."""
    handles = []
    for path, mod in model.named_modules():
        handles.append(mod.register_forward_pre_hook(
            lambda _m, _a, p=path: scopes.push_module(p)))
        handles.append(mod.register_forward_hook(
            lambda _m, _a, _o: scopes.pop_module(), always_call=True))
    undo: list[Callable[[], None]] = []
    wrapped: list[str] = []
    try:
        if functions:
            _patch_functions(model, scopes, undo, wrapped)
        yield wrapped
    finally:
        for h in handles:
            h.remove()
        for u in reversed(undo):
            u()
        scopes.modules.clear()
        scopes.tags.clear()


def _patch_functions(model: Any, scopes: Scopes, undo: list[Callable[[], None]],
                     wrapped: list[str]) -> None:
    seen: set[str] = set()
    for mod in model.modules():
        name = type(mod).__module__
        if name in seen or not name.startswith("transformers."):
            continue
        seen.add(name)
        src = sys.modules.get(name)
        if src is None:
            continue
        for fn_name, tag in FUNCTION_TAGS.items():
            fn = getattr(src, fn_name, None)
            if callable(fn) and not getattr(fn, "__perfscope_wrapped__", False):
                setattr(src, fn_name, _wrap(fn, tag, scopes))
                undo.append(functools.partial(setattr, src, fn_name, fn))
                wrapped.append(f"{name}.{fn_name}")
        iface = getattr(src, "ALL_ATTENTION_FUNCTIONS", None)
        impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
        if iface is not None and impl and impl != "eager" and id(iface) not in seen:
            seen.add(str(id(iface)))
            _patch_interface(iface, impl, scopes, undo, wrapped)


def _patch_interface(iface: Any, impl: str, scopes: Scopes, undo: list[Callable[[], None]],
                     wrapped: list[str]) -> None:
    try:
        fn = iface[impl]
    except KeyError:
        return
    if getattr(fn, "__perfscope_wrapped__", False):
        return
    local = getattr(iface, "_local_mapping", None)
    had = local is not None and impl in local
    iface[impl] = _wrap(fn, "attention", scopes)
    wrapped.append(f"ALL_ATTENTION_FUNCTIONS[{impl!r}]")

    def restore() -> None:
        if had:
            iface[impl] = fn
        else:
            with contextlib.suppress(KeyError):
                del iface[impl]

    undo.append(restore)


def wrap_cache(cache: Any, scopes: Scopes) -> Any:
    """Give one cache object a tagged ``update`` (the instance only; the class is untouched)."""
    update = getattr(cache, "update", None)
    if callable(update) and not getattr(update, "__perfscope_wrapped__", False):
        cache.update = _wrap(update, "kv_cache", scopes)
    return cache


# ---- the counting run: FLOPs (FlopCounterMode) and bytes (tensor sizes) ------------------

def _tensors(obj: Any, out: list) -> list:
    import torch

    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _tensors(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _tensors(o, out)
    return out


def _nbytes(t: Any) -> float:
    return float(t.numel() * t.element_size())


def _sdpa_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """torch's own SDPA formula (``sdpa_flop_count``: QK^T and PV over the full T x K
    matrix, K/V heads broadcast for GQA) for the CPU kernel FlopCounterMode leaves out."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _gqa_shapes(args: tuple) -> tuple:
    """SDPA's (query, key, value, ...) with grouped-query K/V given as the shapes of their
    broadcast to every query head: the kernels compute each query head against its group's
    K/V, but the formula of torch < 2.13 (``sdpa_flop_count``) asserts equal head counts."""
    import torch

    if len(args) < 3 or not all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in args[:3]):
        return args
    q, k, v = args[:3]
    hq, hkv = q.shape[1], k.shape[1]
    if hkv == hq or hkv == 0 or hq % hkv:
        return args
    return (q, torch.Size((k.shape[0], hq, *k.shape[2:])),
            torch.Size((v.shape[0], hq, *v.shape[2:])), *args[3:])


def count_flops_and_bytes(call: Callable[[], Any], scopes: Scopes
                          ) -> tuple[list[CallRecord], dict[str, dict[str, int]], list[str]]:
    """Run ``call`` once under FlopCounterMode and a byte-counting TorchFunctionMode.

    Returns the per-call records (FLOPs from FlopCounterMode's formulas at the dispatcher,
    bytes of the top-level torch calls: inputs plus outputs, nothing for views), the
    FlopCounterMode table by module and op, and notes on what FlopCounterMode could not see.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode, flop_registry, shape_wrapper

    records: list[CallRecord] = []
    notes: list[str] = []

    def logged(packet: Any, formula: Callable) -> Callable:
        name = normalize(str(packet))
        sdpa = "scaled_dot_product" in name and "backward" not in name

        def count(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
            n = formula(*(_gqa_shapes(args) if sdpa else args), out_val=out_val, **kwargs)
            first = args[0] if args and isinstance(args[0], torch.Tensor) else None
            module, cid, tag, index = scopes.where(name)
            records.append(CallRecord(module, cid, tag, name, index,
                                      int(first.shape[-1]) if first is not None and first.dim()
                                      else None, flops=float(n)))
            return n

        count._get_raw = True  # type: ignore[attr-defined]
        return count

    mapping: dict[Any, Callable] = {p: logged(p, f) for p, f in flop_registry.items()}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None and cpu_sdpa not in flop_registry:
        mapping[cpu_sdpa] = logged(cpu_sdpa, shape_wrapper(_sdpa_cpu_flops))

    calls = CallMode(scopes, records, count_bytes=True)

    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with torch.inference_mode(), counter, calls:
        call()
    table = {k: {normalize(str(op)): int(v) for op, v in d.items()}
             for k, d in counter.get_flop_counts().items()}
    if any(r.op == "_scaled_dot_product_flash_attention_for_cpu" for r in records):
        notes.append("FlopCounterMode has no formula for "
                     "aten._scaled_dot_product_flash_attention_for_cpu (SDPA on CPU); perfscope "
                     "counts it with torch's own sdpa_flop_count (the full T x K matrix)")
    return records, table, notes


def _call_mode_class() -> type:
    from torch.overrides import TorchFunctionMode

    class _CallMode(TorchFunctionMode):
        """Every top-level torch call (F.linear, Tensor.add, torch.cat...: what the profiler
        shows as top-level ops; calls made inside them are not seen) with its scope, and its
        time or its bytes."""

        def __init__(self, scopes: Scopes, out: list[CallRecord], *, count_bytes: bool = False,
                     clock: Callable[[], float] | None = None):
            super().__init__()
            self.scopes, self.out, self.count_bytes, self.clock = scopes, out, count_bytes, clock
            self.own = Scopes()  # own indices: these calls are torch-level, not aten-level

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            clock = self.clock
            if clock is not None:
                t0 = clock()
                out = func(*args, **kwargs)
                dt = clock() - t0
            else:
                out = func(*args, **kwargs)
                dt = 0.0
            outs = _tensors(out, [])
            if not outs:
                return out
            name = normalize(getattr(func, "__name__", str(func)))
            ins = _tensors(args, _tensors(kwargs, []))
            nbytes = _call_bytes(name, ins, outs) if self.count_bytes else 0.0
            own = self.own
            own.modules[:] = self.scopes.modules
            own.tags[:] = self.scopes.tags
            module, cid, tag, index = own.where(name)
            first = ins[0] if ins else None
            self.out.append(CallRecord(module, cid, tag, name, index,
                                       int(first.shape[-1]) if first is not None and first.dim()
                                       else None, bytes=nbytes, time_s=dt))
            return out

    return _CallMode


def CallMode(scopes: Scopes, out: list[CallRecord], *, count_bytes: bool = False,
             clock: Callable[[], float] | None = None) -> Any:
    """A TorchFunctionMode recording every top-level torch call into ``out`` (see above)."""
    return _call_mode_class()(scopes, out, count_bytes=count_bytes, clock=clock)


def _call_bytes(name: str, ins: list, outs: list) -> float:
    """Inputs plus outputs; nothing for a view (its outputs share an input's storage)."""
    storages = {t.untyped_storage().data_ptr() for t in ins if t.device.type != "meta"}
    if not is_inplace(name) and all(o.untyped_storage().data_ptr() in storages for o in outs):
        return 0.0
    return sum(map(_nbytes, ins)) + sum(map(_nbytes, outs))


def time_calls(call: Callable[[], Any], scopes: Scopes, clock: Callable[[], float]
               ) -> list[CallRecord]:
    """Run ``call`` once, timing every top-level torch call with ``clock`` (CPU only: on a GPU
    a call returns before its kernel has run)."""
    import torch

    records: list[CallRecord] = []
    with torch.inference_mode(), CallMode(scopes, records, clock=clock):
        call()
    return records
