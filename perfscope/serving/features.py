"""Step features: the quantities every op's FLOPs, bytes and comm message are linear in.

A step runs ``B`` sequences with ``T`` new tokens each and ``C0`` tokens cached before it. With
data-parallel attention (``attn_dp`` groups) the busiest group holds ``B_g = ceil(B / attn_dp)``
of the sequences (``B_g = B`` without it) and runs attention, the dense layers and the shared
experts on them; the MoE layers route the tokens of every group. Every op of ``analyze()``
(flash attention) costs ``coef . phi`` where ``phi`` holds:

- ``1``: weights, fixed per-kernel costs;
- ``B_g``: one row per sequence (LM head on the last token, logits gather);
- ``N_g = B_g T``: one row per token (projections, norms, activations, the TP all-reduce);
- ``N_fresh``: ``N_g`` in a prefill from an empty cache (``C0 = 0``), whose K/V attention reads
  straight from the projections (and MLA up-projects), 0 otherwise;
- ``B_g keys_W``: attention FLOPs, the sum over the new tokens of the keys each attends to, per
  attention window ``W`` (None: full attention): ``keys_W = sum_{j=C0+1}^{C0+T} min(j, W)``;
- ``B_g read_W(T, C0)``: K/V read back from the cache (decode, chunked prefill; MLA's
  up-projection of the cached latent): the distinct tokens the chunk's queries see,
  ``C0 + T`` (full) or ``min(C0 + T, W - 1 + T)`` (window W); 0 from an empty cache;

and for MoE models, with ``N = B T`` the tokens the MoE layers route (``Ctx.all_tokens``):

- ``experts``: distinct experts the busiest EP rank touches (its expert weights are streamed),
- ``assigned``: token-expert assignments of the busiest EP rank (its expert FLOPs and
  activations; ``k N`` without EP, then folded into ``N``), both from
  ``perfscope.analytic.expert_load`` through ``tables.ExpertTable``;
- under attention DP: ``all_tokens`` ``N`` (the all-gather of every token), ``sent``
  ``ceil(N_g / tp)`` (this GPU's share of its group's tokens: combine, dispatch) and
  ``dispatch`` ``max(sent k moe_tp, assigned)`` (the all-to-all's message, in rows: the larger
  of what the GPU sends and what the busiest rank receives; perfscope.analytic.moe._exchange;
  without EP the first always wins, since ``sent tp attn_dp >= N``, and the column is dropped).

Everything but the expert loads is exact arithmetic; those come from the core's functions (exact
at the probe steps ``fitting`` uses; tabulated elsewhere, see ``tables``). The features are
numpy broadcasts, so whole grids of (batch, context) evaluate in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from perfscope.serving.tables import ExpertTable, expert_table


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


def kv_read(T: Any, C0: Any, W: int | None) -> np.ndarray:
    """Distinct tokens (the new ones included) that ``T`` queries over ``C0`` cached tokens
    attend to (vectorised ``perfscope.analytic.attention.kv_tokens_read``): with a window W,
    query j sees j-W+1..j, so the chunk needs the last W-1 cached tokens plus its own."""
    T = np.asarray(T, dtype=float)
    C0 = np.asarray(C0, dtype=float)
    return C0 + T if W is None else np.minimum(C0 + T, W - 1 + T)


def cached(L: Any, W: int | None) -> np.ndarray:
    """Tokens a sequence keeps in a layer's cache after holding L tokens (window W)."""
    L = np.asarray(L, dtype=float)
    return L if W is None else np.minimum(L, W)


def experts_touched(n_experts: int, top_k: int, tokens: Any) -> np.ndarray:
    """E (1 - (1 - k/E)^N): distinct experts N tokens touch under uniform top-k routing."""
    N = np.asarray(tokens, dtype=float)
    return np.where(N > 0, n_experts * (1.0 - (1.0 - top_k / n_experts) ** N), 0.0)


class MoeLayout(NamedTuple):
    """How a MoE model's experts sit on the GPUs of a stage (perfscope.analytic.parallel)."""

    n_experts: int
    top_k: int
    ep: int
    moe_tp: int  # GPUs one expert is split over: tp x attn_dp / ep
    all_to_all: bool  # dispatch/combine by all-to-all (else all-gather + reduce-scatter)


class Parts(NamedTuple):
    """A step as the features see it (arrays broadcast together)."""

    seqs: np.ndarray  # B_g: sequences of the busiest attention group
    tokens: np.ndarray  # N_g
    fresh: np.ndarray  # N_g of a prefill from an empty cache, else 0
    keys: tuple[np.ndarray, ...]  # B_g keys_W per window
    read: tuple[np.ndarray, ...]  # B_g read_W per window (0 from an empty cache)
    routed: np.ndarray  # N: tokens the MoE layers route (every group's)


class FeatureSpace:
    """The feature columns of one configuration: names and how to build them.

    ``windows``: the attention windows of the model's layers (None = full attention).
    ``moe``: the expert layout, or None for a dense model. ``tp``, ``attn_dp``: the stage.
    """

    def __init__(self, windows: Sequence[int | None], moe: MoeLayout | None = None,
                 tp: int = 1, attn_dp: int = 1):
        self.windows = tuple(windows)
        self.moe = moe
        self.tp, self.attn_dp = tp, attn_dp
        self.table: ExpertTable | None = None
        names = ["const", "seqs", "tokens", "fresh"]
        names += [f"keys@{w or 'full'}" for w in self.windows]
        names += [f"read@{w or 'full'}" for w in self.windows]
        if moe is not None:
            self.table = expert_table(moe.n_experts, moe.top_k, moe.ep)
            names.append("experts")
            if moe.ep > 1:
                names.append("assigned")
            if attn_dp > 1:
                names.append("all_tokens")
                if tp > 1:
                    names.append("sent")
                if moe.all_to_all and moe.ep > 1:  # without EP: always k x moe_tp x sent
                    names.append("dispatch")
        self.names = tuple(names)
        self.index = {n: i for i, n in enumerate(self.names)}

    @property
    def size(self) -> int:
        return len(self.names)

    def decode_columns(self) -> np.ndarray:
        """Columns a decode step can vary independently (T = 1: tokens equal sequences, the
        keys attended equal the tokens read, nothing is fresh): the others are collinear
        with these and get no coefficient."""
        drop = {"tokens", "fresh", *(f"read@{w or 'full'}" for w in self.windows)}
        return np.array([i for i, n in enumerate(self.names) if n not in drop])

    # ---- building ----------------------------------------------------------------------
    def group_seqs(self, seqs: np.ndarray) -> np.ndarray:
        """Sequences of the busiest attention-DP group: ceil(B / attn_dp)."""
        return seqs if self.attn_dp == 1 else np.ceil(seqs / self.attn_dp - 1e-9)

    def parts(self, B: Any, T: Any, C0: Any) -> Parts:
        """A uniform step: ``B`` sequences of ``T`` new tokens over ``C0`` cached each."""
        B, T, C0 = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (B, T, C0)))
        Bg = self.group_seqs(B)
        N = Bg * T
        empty = C0 <= 0
        return Parts(Bg, N, np.where(empty, N, 0.0),
                     tuple(Bg * keys_sum(T, C0, w) for w in self.windows),
                     tuple(np.where(empty, 0.0, Bg * kv_read(T, C0, w)) for w in self.windows),
                     B * T)

    def build(self, B: Any, T: Any, C0: Any, *, exact: bool = False) -> np.ndarray:
        """Features of steps of ``B`` sequences with ``T`` new tokens each and ``C0`` cached
        before (arrays broadcast together); shape (..., size). ``exact``: the expert loads
        straight from the core (whole token counts only; the fit's probes), not the table."""
        return self.assemble(self.parts(B, T, C0), exact=exact)

    def assemble(self, p: Parts, *, exact: bool = False) -> np.ndarray:
        """Features of the step ``p`` (see ``parts``; ``mixed`` steps build their own)."""
        cols = [np.ones_like(p.seqs), p.seqs, p.tokens, p.fresh, *p.keys, *p.read]
        moe = self.moe
        if moe is not None:
            touched, assigned = self._loads(p.routed, exact)
            cols.append(touched)
            if moe.ep > 1:
                cols.append(assigned)
            if self.attn_dp > 1:
                cols.append(p.routed)
                sent = np.ceil(p.tokens / self.tp - 1e-9)
                if self.tp > 1:
                    cols.append(sent)
                if moe.all_to_all and moe.ep > 1:
                    cols.append(np.maximum(sent * moe.top_k * moe.moe_tp, assigned))
        return np.stack(cols, axis=-1)

    def _loads(self, routed: np.ndarray, exact: bool) -> tuple[np.ndarray, np.ndarray]:
        assert self.table is not None
        if not exact or self.table.ranks == 1:
            return self.table(routed)
        flat = routed.ravel()
        vals = np.array([self.table.exact(round(n)) for n in flat]).reshape(-1, 2)
        return vals[:, 0].reshape(routed.shape), vals[:, 1].reshape(routed.shape)

    def kv_tokens(self, B: Any, L: Any) -> np.ndarray:
        """Per window: cached tokens of B sequences holding L tokens each; shape (..., W)."""
        B, L = np.broadcast_arrays(np.asarray(B, float), np.asarray(L, float))
        return np.stack([B * cached(L, w) for w in self.windows], axis=-1)
