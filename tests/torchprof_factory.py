"""Factories for ``perfscope profile --module tests.torchprof_factory:NAME`` (used by the tests;
also an example of the factory contract, see perfscope/measure/torchprof/build.py)."""

from __future__ import annotations

import torch
from torch import nn

WIDTH, HIDDEN, BATCH, SEQ = 64, 256, 4, 32


class TinyBlock(nn.Module):
    """A pre-norm MLP block with a residual: norm -> up -> GELU -> down, plus x."""

    def __init__(self, width: int = WIDTH, hidden: int = HIDDEN):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.down = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.act(self.up(self.norm(x))))


def make():
    """(module, inputs): the simplest form."""
    torch.manual_seed(0)
    return TinyBlock(), torch.randn(BATCH, SEQ, WIDTH)


def make_dict(device: str, dtype: torch.dtype):
    """The dict form; takes device and dtype, so perfscope leaves placement to it."""
    torch.manual_seed(0)
    block = TinyBlock().to(device=device, dtype=dtype)
    x = torch.randn(BATCH, SEQ, WIDTH, device=device, dtype=dtype)
    return {"module": block, "args": (x,), "name": "tiny block"}


def bad():
    return 42
