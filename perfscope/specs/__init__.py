"""Specs: hardware and interconnect (TOML), models (HF config.json), scenarios."""
