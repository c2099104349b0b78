"""perfscope: roofline analysis and measurement of transformer LLM inference.

    from perfscope import Scenario, analyze, load_hw, load_model
    a = analyze(load_model("llama-3.1-8b"), load_hw("h100-sxm"), Scenario(phase="decode"))

The public names are loaded on first use, so ``import perfscope`` (and the CLI) stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Analysis", "ModelSpec", "Scenario", "analyze", "list_hw", "load_hw", "load_link",
           "load_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from perfscope import api

        return getattr(api, name)
    raise AttributeError(f"module 'perfscope' has no attribute {name!r}")
