"""Serving predictions: TTFT, TPOT and throughput under load (``perfscope predict``).

    from perfscope.serving import Layout, Workload, predict

Loaded lazily like the package's public API, so ``import perfscope.serving`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EngineParams", "Layout", "Prediction", "StepModel", "Workload", "fit_step_model",
           "get_engine", "load_engines", "predict", "serve"]

_WHERE = {"EngineParams": "engines", "get_engine": "engines", "load_engines": "engines",
          "Layout": "predict", "Prediction": "predict", "Workload": "predict",
          "predict": "predict", "StepModel": "stepmodel", "fit_step_model": "fitting",
          "serve": "simulate"}


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'perfscope.serving' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(f"perfscope.serving.{mod}")
    # bind every public name of that module here: importing the submodule ``predict`` sets
    # the package attribute ``predict`` to the module, which would then shadow the function
    # for the next name of ``from perfscope.serving import Layout, Workload, predict``
    for public, where in _WHERE.items():
        if where == mod:
            globals()[public] = getattr(module, public)
    return globals()[name]
