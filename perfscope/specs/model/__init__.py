"""ModelSpec: a transformer's shape, built offline from a Hugging Face ``config.json``.

- ``types``: the records (ModelSpec, MoESpec, MLASpec, CheckpointQuant);
- ``counting``: the weight inventory, from which parameters, memory and GEMM traffic derive;
- ``adapters``: one small adapter per ``model_type`` mapping config fields onto ModelSpec;
- ``loading``: built-in names and config.json paths.

Parameter counts follow the reference (transformers) implementation exactly: every weight,
bias and norm vector, tied embeddings counted once, no multi-token-prediction head for
DeepSeek-V3.
"""

from perfscope.specs.model.adapters import ADAPTERS, model_from_config
from perfscope.specs.model.loading import load_model, model_dirs, model_files, read_config
from perfscope.specs.model.types import CheckpointQuant, MLASpec, ModelSpec, MoESpec

__all__ = [
           "ADAPTERS",
           "CheckpointQuant",
           "MLASpec",
           "MoESpec",
           "ModelSpec",
           "load_model",
           "model_dirs",
           "model_files",
           "model_from_config",
           "read_config",
]
