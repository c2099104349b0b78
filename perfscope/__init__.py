"""perfscope: roofline analysis and measurement of transformer LLM inference."""

__version__ = "0.1.0"
