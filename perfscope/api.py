"""The public Python API."""

from perfscope.analysis import Analysis, analyze
from perfscope.specs.loading import list_hw, load_hw, load_link
from perfscope.specs.model import ModelSpec, load_model
from perfscope.specs.scenario import Scenario

__all__ = ["Analysis", "ModelSpec", "Scenario", "analyze", "list_hw", "load_hw", "load_link",
           "load_model"]
