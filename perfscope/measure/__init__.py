"""The measured side. torch, pynvml and triton are imported lazily, only in here."""
