"""What is built in, as data rows and as terminal tables: devices (with ridge points), links,
models (with MLA latent ranks, experts and bytes per token). Rows carry SI units; tables
format them for people and fit the width."""

from __future__ import annotations

from typing import Any

from perfscope.errors import PerfscopeError
from perfscope.report import fmt as F
from perfscope.report.tables import Col, fit_table, lines, t_s, wrap_fields

# ---- devices --------------------------------------------------------------------------------


def hw_row(h: Any) -> dict[str, Any]:
    bf = h.peaks.get("bf16") or h.peaks.get("fp16")
    return {"name": h.name, "display_name": h.display_name, "vendor": h.vendor,
            "memory_bytes": h.memory_bytes, "memory_bandwidth_bytes_s": h.memory_bandwidth_bytes_s,
            "bf16_dense_flops_per_s": bf.tensor_dense if bf else None,
            "dtypes": h.dtypes(), "gpu_link": h.gpu_link.name if h.gpu_link else None,
            "empirical": h.empirical is not None, "aliases": list(h.aliases)}


def ridge_points(h: Any) -> list[dict[str, Any]]:
    """Where each compute ceiling meets the memory roof (FLOP per byte): spec, and the
    empirical ceilings (measured on the part or derived by perfscope.specs.ceilings' rule,
    each labelled with its source)."""
    from perfscope.specs.ceilings import describe

    out = []
    bw = h.memory_bandwidth_bytes_s
    for d, p in h.peaks.items():
        for unit, peak in (("tensor", p.tensor_dense), ("vector", p.vector)):
            if peak:
                out.append({"dtype": d, "unit": unit, "ceiling": "spec", "flops_per_s": peak,
                            "bandwidth_bytes_s": bw, "intensity": peak / bw})
    try:
        emp = describe(h, "empirical")
    except PerfscopeError:  # a spec with too little to derive from: spec ridges only
        return out
    ebw = emp["memory_bandwidth_bytes_s"]["value"]
    for d, row in emp["gemm_flops_per_s"].items():
        g = row["value"]
        out.append({"dtype": d, "unit": "tensor", "ceiling": row["source"],
                    "flops_per_s": g, "bandwidth_bytes_s": ebw, "intensity": g / ebw})
    return out


def hw_list_renderables(hws: list[Any], width: int) -> list[Any]:
    cols = [Col("name", 0, right=False), Col("memory", 0), Col("bandwidth", 0),
            Col("16-bit dense", 1), Col("ridge", 2), Col("link", 3, right=False),
            Col("dtypes", 5, right=False), Col("display name", 4, right=False)]
    rows = []
    for h in hws:
        bf = h.peaks.get("bf16") or h.peaks.get("fp16")
        dense = bf.tensor_dense if bf else None
        rows.append([h.name, F.nbytes(h.memory_bytes), F.si(h.memory_bandwidth_bytes_s, "B/s"),
                     F.rate(dense) if dense else "-",
                     f"{F.num(dense / h.memory_bandwidth_bytes_s)} FLOP/B" if dense else "-",
                     h.gpu_link.name if h.gpu_link else "-", " ".join(h.dtypes()),
                     h.display_name])
    return [fit_table(cols, rows, width),
            *lines(wrap_fields(["ridge: 16-bit dense tensor peak / HBM bandwidth",
                                "perfscope hw show NAME for every figure and its source"],
                               width, sep="; "))]


def hw_show_renderables(h: Any, width: int) -> list[Any]:
    out = lines([*wrap_fields([f"{h.display_name} ({h.name})", f"from {h.file}"], width),
                 *wrap_fields([f"memory {F.nbytes(h.memory_bytes)}",
                               f"at {F.si(h.memory_bandwidth_bytes_s, 'B/s')}",
                               f"[{h.memory_source}]"], width, sep=" "),
                 f"L2 {F.nbytes(h.l2_bytes)}, {h.sm_count} SMs"])
    ridges = {(r["dtype"], r["unit"], r["ceiling"]): r["intensity"] for r in ridge_points(h)}
    cols = [Col("dtype", 0, right=False), Col("tensor dense", 0), Col("ridge", 0),
            Col("with sparsity", 3), Col("vector", 1), Col("vector ridge", 2),
            Col("source", 9, right=False)]
    rows = []
    for d, p in h.peaks.items():
        rows.append([d, F.rate(p.tensor_dense) if p.tensor_dense else "-",
                     f"{F.num(ridges[(d, 'tensor', 'spec')])} FLOP/B" if p.tensor_dense else "-",
                     F.rate(p.tensor_sparse) if p.tensor_sparse else "-",
                     F.rate(p.vector) if p.vector else "-",
                     f"{F.num(ridges[(d, 'vector', 'spec')])} FLOP/B" if p.vector else "-",
                     _short(p.source, 60)])
    out.append(fit_table(cols, rows, width))
    notes = ["ridge: the intensity (FLOP per HBM byte) above which an op is compute-bound",
             f"usable memory {F.nbytes(h.memory_bytes)} of "
             f"{F.nbytes(h.memory_nominal_bytes)} nominal [{h.memory_driver_source}]"]
    for k, v in (("gpu", h.gpu_link), ("host", h.host_link), ("network", h.network_link)):
        if v:
            notes.append(f"{k} link: {v.name} {F.si(v.bandwidth_bytes_s, 'B/s')} per "
                         f"direction, {v.latency_class} latency class")
    topo = h.topology
    notes.append(f"topology: {topo.scale_up_kind} of {topo.scale_up_domain} GPUs, "
                 f"{topo.gpus_per_node} GPUs per node")
    emp_ridges = {r["dtype"]: r for r in ridge_points(h) if r["ceiling"] != "spec"}
    try:
        from perfscope.specs.ceilings import describe

        c = describe(h, "empirical")
    except PerfscopeError:  # nothing to derive empirical ceilings from
        c = None
    if c is not None:
        for d, r in c["gemm_flops_per_s"].items():
            er = emp_ridges.get(d)
            notes.append(f"empirical GEMM {d}: {F.rate(r['value'])} ({r['source']})"
                         + (f", ridge {F.num(er['intensity'])} FLOP/B" if er else "")
                         + f" [{_short(r['note'], 70)}]")
        m = c["memory_bandwidth_bytes_s"]
        notes.append(f"empirical memory: {F.si(m['value'], 'B/s')} ({m['source']}) "
                     f"[{_short(m['note'], 70)}]")
        k = c["kernel_overhead_s"]
        notes.append(f"empirical kernel overhead: {t_s(k['value'])} per kernel "
                     f"({k['source']}) [{_short(k['note'], 70)}]")
    out += lines([w for n in notes for w in wrap_fields(n.split(" "), width, sep=" ")])
    return out


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


# ---- links ----------------------------------------------------------------------------------

def links_renderables(links: list[Any], width: int) -> list[Any]:
    cols = [Col("name", 0, right=False), Col("kind", 2, right=False), Col("per direction", 0),
            Col("latency class", 1, right=False), Col("achieved busbw", 1),
            Col("display name", 4, right=False)]
    rows = [[k.name, k.kind, F.si(k.bandwidth_bytes_s, "B/s"), k.latency_class,
             F.si(k.empirical_busbw_bytes_s, "B/s") if k.empirical_busbw_bytes_s else "-",
             k.display_name] for k in links]
    return [fit_table(cols, rows, width)]


# ---- models ---------------------------------------------------------------------------------

def attention_kind(m: Any) -> str:
    if m.mla:
        return "mla"
    return "mha" if m.n_kv_heads == m.n_heads else ("mqa" if m.n_kv_heads == 1 else "gqa")


def kv_bytes_per_token(m: Any, bytes_per_element: float = 2.0) -> float:
    """KV cache bytes one token adds, all layers (MLA: latent + rotary key), 16-bit."""
    return sum(m.kv_elements_per_token(i) for i in range(m.n_layers)) * bytes_per_element


def model_row(m: Any) -> dict[str, Any]:
    row = {"name": m.name, "model_type": m.model_type, "params": m.params,
           "active_params": m.active_params, "layers": m.n_layers, "hidden": m.hidden,
           "heads": m.n_heads, "kv_heads": m.n_kv_heads, "head_dim": m.head_dim,
           "intermediate": m.intermediate, "vocab": m.vocab, "max_position": m.max_position,
           "attention": attention_kind(m),
           "experts": m.moe.n_experts if m.moe else 0, "top_k": m.moe.top_k if m.moe else 0,
           "sliding_window": m.sliding_window,
           "kv_bytes_per_token_16bit": kv_bytes_per_token(m),
           "active_weight_bytes_per_token_16bit": 2 * m.active_params}
    if m.moe:
        e = m.moe
        row["moe"] = {"experts": e.n_experts, "top_k": e.top_k,
                      "expert_intermediate": e.expert_intermediate,
                      "shared_intermediate": e.shared_intermediate,
                      "dense_layers": sorted(e.dense_layers)}
    if m.mla:
        a = m.mla
        row["mla"] = {"q_lora_rank": a.q_lora_rank, "kv_lora_rank": a.kv_lora_rank,
                      "qk_nope_head_dim": a.qk_nope_head_dim,
                      "qk_rope_head_dim": a.qk_rope_head_dim, "v_head_dim": a.v_head_dim}
    return row


def models_list_renderables(models: list[Any], width: int) -> list[Any]:
    cols = [Col("name", 0, right=False), Col("type", 3, right=False), Col("params", 0),
            Col("active", 1), Col("layers", 4), Col("hidden", 5), Col("heads", 6),
            Col("KV heads", 2), Col("attention", 2, right=False), Col("experts", 2),
            Col("KV/token", 1), Col("window", 7)]
    rows = []
    for name, m in models:
        rows.append([name, m.model_type, f"{F.num(m.params / 1e9)} B",
                     f"{F.num(m.active_params / 1e9)} B", str(m.n_layers), F.count(m.hidden),
                     str(m.n_heads), str(m.n_kv_heads), attention_kind(m),
                     f"{m.moe.top_k}/{m.moe.n_experts}" if m.moe else "-",
                     F.nbytes(kv_bytes_per_token(m)), F.count(m.sliding_window)
                     if m.sliding_window else "-"])
    return [fit_table(cols, rows, width),
            *lines(wrap_fields(["params in billions", "experts: active/total",
                                "KV/token: cache bytes per token, all layers, 16-bit",
                                "--model takes a name, its Hugging Face hub id "
                                "(offline; instruct variants too) or a config.json path"],
                               width, sep="; "))]


def model_show_renderables(m: Any, width: int) -> list[Any]:
    r = model_row(m)
    items: list[tuple[str, str]] = [
        ("name", m.name), ("model type", m.model_type), ("source", m.source),
        ("parameters", f"{F.count(m.params)} ({F.num(m.params / 1e9)} B)"),
        ("active per token", f"{F.count(m.active_params)} ({F.num(m.active_params / 1e9)} B)"),
        ("layers", str(m.n_layers)), ("hidden", F.count(m.hidden)),
        ("attention", f"{attention_kind(m)}: {m.n_heads} heads, {m.n_kv_heads} KV heads, "
                      f"head dim {m.head_dim}"),
        ("MLP", f"{'gated ' if m.gated_mlp else ''}{m.activation}, width "
                f"{F.count(m.intermediate)}"),
        ("vocabulary", F.count(m.vocab)), ("context", F.count(m.max_position)),
        ("positions", m.positional + (f", rotary dim {m.rotary_dim}" if m.rotary_dim else "")),
        ("norm", f"{m.norm}, {m.norms_per_layer} per layer"),
        ("tied embeddings", "yes" if m.tied_embeddings else "no"),
    ]
    if m.sliding_window:
        items.append(("sliding window", f"{F.count(m.sliding_window)} tokens on "
                                        f"{len(m.sliding_layers)} of {m.n_layers} layers"))
    if m.mla:
        a = m.mla
        items += [("MLA q rank", str(a.q_lora_rank or "none (full q projection)")),
                  ("MLA kv latent rank", str(a.kv_lora_rank)),
                  ("MLA head dims", f"q/k no-rope {a.qk_nope_head_dim} + rope "
                                    f"{a.qk_rope_head_dim}, v {a.v_head_dim}")]
    if m.moe:
        e = m.moe
        items += [("experts", f"{e.n_experts} routed, top {e.top_k}, width "
                              f"{F.count(e.expert_intermediate)}"),
                  ("shared experts", F.count(e.shared_intermediate) + " wide"
                   if e.shared_intermediate else "none"),
                  ("dense layers", ", ".join(map(str, sorted(e.dense_layers))) or "none")]
    items += [("KV cache per token", f"{F.nbytes(r['kv_bytes_per_token_16bit'])} (16-bit, "
                                     "all layers" + (", latent + rotary key" if m.mla else "")
                                     + ")"),
              ("weights read per token", f"{F.nbytes(r['active_weight_bytes_per_token_16bit'])}"
                                         " (16-bit, active parameters, batch 1)")]
    rows = [[k, v] for k, v in items]
    return [fit_table([Col("", 0, right=False), Col("", 0, right=False, wrap=True)], rows,
                      width, header=False)]
