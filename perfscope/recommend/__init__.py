"""The recommender: which layout, quantization, KV dtype and concurrency to serve with, and why
(``perfscope recommend``).

    from perfscope.recommend import RecommendRequest, recommend, pareto_figure
    r = recommend(RecommendRequest(load_model("llama-3.1-70b"), load_hw("h100-sxm"), gpus=8,
                                   isl=1024, osl=1024, tpot_s=0.03))
    r.top, r.recommendations, r.to_json()        # perfscope.recommend/1

Loaded lazily, so importing the package costs nothing until a name is used.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Candidate",
    "RecommendRequest",
    "RecommendResult",
    "Recommendation",
    "pareto_figure",
    "recommend",
]

_WHERE = {"Candidate": "types", "Recommendation": "types", "RecommendRequest": "types",
          "RecommendResult": "types", "pareto_figure": "report", "recommend": "search"}


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'perfscope.recommend' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"perfscope.recommend.{mod}"), name)
