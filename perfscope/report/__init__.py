"""Rendering: rich tables, figures, HTML. Compute lives elsewhere."""
