"""The questions users ask, answered directly from the search: the largest batch, the longest
context and the smallest GPU count that fit; the best layout for a TPOT target; the gain of each
quantization side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from perfscope.recommend.types import Candidate

if TYPE_CHECKING:
    from perfscope.recommend.search import Evaluated, Search

TPOT_LADDER_S = (0.01, 0.02, 0.03, 0.05, 0.1)


def _config(e: Evaluated) -> dict[str, Any]:
    st = e.st
    return {"tp": st.tp, "pp": st.pp, "ep": st.ep, "attn_dp": st.attn_dp,
            "gpus_per_replica": st.gpus, "scheme": st.scheme.name, "kv_dtype": e.kv}


def _budget(search: Search, e: Evaluated, tokens: np.ndarray) -> np.ndarray:
    """Bytes per GPU left for KV after weights and the activations of a step."""
    eng, sm = search.eng, e.sm
    M = eng.max_num_tokens
    largest = np.minimum(tokens, M) if eng.chunked_prefill else np.maximum(tokens, M)
    act = sm.activation_bytes(largest)
    cap = search.req.hw.memory_bytes
    if eng.memory_policy == "total":
        return eng.memory_fraction * cap - sm.weights_bytes - act
    return eng.memory_fraction * (cap - sm.weights_bytes - act)


_LENGTHS: dict[int, np.ndarray] = {}


def _lengths(limit: int) -> np.ndarray:
    """Candidate sequence lengths 1..limit, geometric (0.2% apart) with the limit itself."""
    got = _LENGTHS.get(limit)
    if got is None:
        got = _LENGTHS[limit] = np.unique(np.append(
            np.geomspace(1, limit, 4000).astype(int), limit))
    return got


def longest_context(search: Search, e: Evaluated) -> int:
    """Most tokens one sequence can hold (prompt + output) with the KV cache fitting, capped
    at the model's context window."""
    from perfscope.recommend.space import kv_bits

    L = _lengths(search.req.model.max_position)
    kv = e.sm.kv_bytes_per_seq(L, kv_bits(e.kv), search.eng.kv_block_tokens)
    ok = kv <= _budget(search, e, L)
    return int(L[ok].max()) if ok.any() else 0


def largest_batch(search: Search, e: Evaluated) -> int:
    """Sequences of isl + osl tokens whose whole KV cache fits at once (paged), no matter
    the engine's cap on sequences in flight."""
    from perfscope.recommend.space import kv_bits

    req, eng = search.req, search.eng
    budget = float(_budget(search, e, np.asarray(float(req.isl))))
    kv = float(e.sm.kv_bytes_per_seq(req.isl + req.osl, kv_bits(e.kv), eng.kv_block_tokens))
    return max(0, int(budget // kv))


def answers(search: Search, top: Candidate | None) -> dict[str, Any]:
    req = search.req
    out: dict[str, Any] = {}
    fits = [e for e in search.evals if e.served.max_running[0] >= 1]
    if fits:
        sizes = [(largest_batch(search, e), e) for e in fits]
        n, e = max(sizes, key=lambda t: (t[0], -t[1].st.gpus))
        out["largest_batch"] = {
            "value": n, "per": "replica", "tokens_per_sequence": req.isl + req.osl,
            **_config(e), "engine_cap": search.eng.max_num_seqs,
            "meaning": f"sequences of {req.isl + req.osl} tokens whose KV cache fits at once "
                       f"(paged in blocks of {search.eng.kv_block_tokens} tokens)"}
        best_ctx = max(((longest_context(search, e), e) for e in fits), key=lambda t: t[0])
        out["longest_context"] = {
            "value": best_ctx[0], **_config(best_ctx[1]),
            "model_limit": req.model.max_position,
            "limited_by": "model" if best_ctx[0] >= req.model.max_position else "memory",
            "meaning": "tokens (prompt + output) of a single sequence that fit"}
        small = min(fits, key=lambda e: (e.st.gpus, -float(e.served.max_running[0])))
        out["smallest_gpu_count"] = {"value": small.st.gpus, **_config(small),
                                     "meaning": f"fewest GPUs holding the weights and one "
                                                f"{req.isl + req.osl}-token sequence"}
    ladder = (req.tpot_s,) if req.tpot_s is not None else TPOT_LADDER_S
    out["best_for_tpot"] = [_best_under(search, t) for t in ladder]
    if top is not None:
        e_top = _eval_of(search, top)
        if e_top is not None:
            out["top_longest_context"] = longest_context(search, e_top)
            out["top_largest_batch"] = largest_batch(search, e_top)
    return out


def _best_under(search: Search, tpot_s: float) -> dict[str, Any]:
    best: tuple[float, Evaluated, int] | None = None
    for e in search.evals:
        ok = e.feasible & (e.served.tpot_s <= tpot_s)
        if search.req.ttft_s is not None:
            ok &= e.served.ttft_s <= search.req.ttft_s
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            continue
        tps = e.tokens_per_s_per_gpu
        i = idx[np.argmax(tps[idx])]
        if best is None or tps[i] > best[0]:
            best = (float(tps[i]), e, int(i))
    if best is None:
        return {"tpot_target_s": tpot_s, "config": None}
    _, e, i = best
    s = e.served
    return {"tpot_target_s": tpot_s, "config": _config(e),
            "concurrency_per_replica": int(s.concurrency[i]), "tpot_s": float(s.tpot_s[i]),
            "ttft_s": float(s.ttft_s[i]), "tokens_per_s_per_gpu": best[0]}


def _eval_of(search: Search, c: Candidate) -> Evaluated | None:
    for e in search.evals:
        st = e.st
        if (st.tp, st.pp, st.ep, st.attn_dp, st.scheme.name, e.kv) == (
                c.tp, c.pp, c.ep, c.attn_dp, c.scheme, c.kv_dtype):
            return e
    return None


def quantization_table(search: Search, top: Candidate | None,
                       any_meets: bool = True) -> list[dict[str, Any]]:
    """Per weight scheme: the best throughput under the targets anywhere in the search (of
    what fits, when nothing meets them), and at the top choice's layout the single-request
    TPOT and TTFT and the batch that fits."""
    rows: dict[str, dict[str, Any]] = {}
    for e in search.evals:
        name = e.st.scheme.name
        r = rows.setdefault(name, {"scheme": name, "label": e.st.scheme.label,
                                   "best_tokens_per_s_per_gpu": 0.0, "best_config": None})
        ok = search.meets(e) if any_meets else e.feasible
        tps = e.tokens_per_s_per_gpu
        if ok.any():
            i = np.flatnonzero(ok)[np.argmax(tps[ok])]
            if tps[i] > r["best_tokens_per_s_per_gpu"]:
                r["best_tokens_per_s_per_gpu"] = float(tps[i])
                r["best_config"] = _config(e) | {"concurrency_per_replica":
                                                 int(e.served.concurrency[i])}
        if top is not None and (e.st.tp, e.st.pp, e.st.ep, e.st.attn_dp) == (
                top.tp, top.pp, top.ep, top.attn_dp) and e.kv == top.kv_dtype:
            s = e.served
            r["at_top_layout"] = {"tpot_s_at_1": float(s.tpot_s[0]),
                                  "ttft_s_at_1": float(s.ttft_s[0]),
                                  "weights_per_gpu_bytes": float(e.sm.weights_bytes),
                                  "max_concurrency": int(s.max_running[0])}
    for st, *_ in search.too_big:  # schemes whose weights fit no layout searched
        if st.scheme.name not in rows:
            rows[st.scheme.name] = {"scheme": st.scheme.name, "label": st.scheme.label,
                                    "best_tokens_per_s_per_gpu": 0.0, "best_config": None,
                                    "fits": False}
    base = rows.get("bf16") or rows.get("fp16")
    for r in rows.values():
        if base and base["best_tokens_per_s_per_gpu"] > 0:
            r["gain_vs_16bit"] = r["best_tokens_per_s_per_gpu"] / \
                base["best_tokens_per_s_per_gpu"]
        else:
            r["gain_vs_16bit"] = None
    return sorted(rows.values(), key=lambda r: -r["best_tokens_per_s_per_gpu"])
