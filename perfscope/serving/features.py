"""Step features: the handful of quantities every op's FLOPs and bytes are linear in.

For a step of ``B`` sequences with ``T`` new tokens each and ``C0`` tokens cached before it,
every op of ``analyze()`` (flash attention) costs ``coef . phi`` where ``phi`` holds:

- ``1``: weights, fixed per-kernel costs;
- ``B``: one row per sequence (LM head on the last token, logits gather);
- ``N = B T``: one row per token (every projection, norm, activation, comm message);
- ``N_fresh``: tokens of a prefill from an empty cache (``C0 = 0``), whose K/V attention reads
  straight from the projections (and MLA up-projects), 0 otherwise;
- ``B keys_W``: attention FLOPs, sum over the new tokens of the keys each attends to, per
  attention window ``W`` (None: full attention): ``keys_W = sum_{j=C0+1}^{C0+T} min(j, W)``;
- ``B cached_W(C0+T)``: K/V read back from the cache (decode, chunked prefill; MLA's up-projection
  of the cached latent), ``cached_W(L) = min(L, W)``;
- ``X(N)``: expected distinct experts touched by ``N`` tokens (MoE weight traffic), the closed
  form of ``perfscope.analytic.moe.expected_experts``.

Everything is exact except through ``X``'s closed form, which is evaluated exactly too. The
features are numpy broadcasts, so whole grids of (batch, context) evaluate in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def keys_sum(T: Any, C0: Any, W: int | None) -> np.ndarray:
    """Per sequence: sum over its T new tokens of the keys each attends to, with a sliding
    window W (vectorised ``perfscope.analytic.attention.attended_keys``).

    Token j (1-based position C0+1 .. C0+T) attends to min(j, W) keys:
    full attention sums an arithmetic series, (a + b) T / 2 with a = C0+1, b = C0+T.
    """
    T = np.asarray(T, dtype=float)
    C0 = np.asarray(C0, dtype=float)
    a, b = C0 + 1, C0 + T
    full = (a + b) * T / 2
    if W is None:
        return full
    # positions a..W attend to themselves (arithmetic series), the rest to W keys each
    below = np.clip(np.minimum(b, W) - a + 1, 0, None)  # tokens at positions <= W
    return np.where(b <= W, full, np.where(a >= W, W * T,
                                           (a + np.minimum(b, W)) * below / 2 + (T - below) * W))


def cached(L: Any, W: int | None) -> np.ndarray:
    """Tokens a sequence keeps in a layer's cache after holding L tokens (window W)."""
    L = np.asarray(L, dtype=float)
    return L if W is None else np.minimum(L, W)


def experts_touched(n_experts: int, top_k: int, tokens: Any) -> np.ndarray:
    """E (1 - (1 - k/E)^N): distinct experts N tokens touch under uniform top-k routing."""
    N = np.asarray(tokens, dtype=float)
    return np.where(N > 0, n_experts * (1.0 - (1.0 - top_k / n_experts) ** N), 0.0)


class FeatureSpace:
    """The feature columns of one model: names and how to build them for each phase.

    ``windows``: the attention windows of the model's layers (None = full attention).
    ``moe``: (n_experts, top_k) or None.
    """

    def __init__(self, windows: Sequence[int | None], moe: tuple[int, int] | None):
        self.windows = tuple(windows)
        self.moe = moe
        names = ["const", "seqs", "tokens", "fresh"]
        names += [f"keys@{w or 'full'}" for w in self.windows]
        names += [f"cached@{w or 'full'}" for w in self.windows]
        if moe is not None:
            names.append("experts")
        self.names = tuple(names)

    @property
    def size(self) -> int:
        return len(self.names)

    def build(self, B: Any, T: Any, C0: Any) -> np.ndarray:
        """Features of steps of ``B`` sequences with ``T`` new tokens each and ``C0`` cached
        before (arrays broadcast together); shape (..., size).

        ``cached`` columns count the cache read back (zero in a prefill from an empty cache,
        where K/V come straight from the projections)."""
        B, T, C0 = (np.asarray(x, dtype=float) for x in (B, T, C0))
        B, T, C0 = np.broadcast_arrays(B, T, C0)
        N = B * T
        cols = [np.ones_like(B), B, N, np.where(C0 > 0, 0.0, N)]
        cols += [B * keys_sum(T, C0, w) for w in self.windows]
        cols += [np.where(C0 > 0, B * cached(C0 + T, w), 0.0) for w in self.windows]
        if self.moe is not None:
            cols.append(experts_touched(*self.moe, N))
        return np.stack(cols, axis=-1)

    def kv_tokens(self, B: Any, L: Any) -> np.ndarray:
        """Per window: cached tokens of B sequences holding L tokens each; shape (..., W)."""
        B, L = np.broadcast_arrays(np.asarray(B, float), np.asarray(L, float))
        return np.stack([B * cached(L, w) for w in self.windows], axis=-1)
