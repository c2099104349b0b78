"""Scenario: what one analysed step is (phase, shapes, dtypes, parallelism, implementation)."""

from __future__ import annotations

from dataclasses import dataclass

from perfscope.errors import InputError
from perfscope.units import ACT_DTYPES, KV_DTYPES, WEIGHT_DTYPES, check_dtype

PHASES = ("prefill", "decode", "chunked_prefill")
ATTN_IMPLS = ("flash", "unfused")
CEILINGS = ("spec", "empirical")
# how tokens reach their experts and come back under attention DP: all-to-all dispatch and
# combine (DeepEP, pplx, TensorRT-LLM's alltoall; vLLM --all2all-backend deepep_*), or an
# all-gather of every token to every GPU and a reduce-scatter of the outputs (vLLM's default
# --all2all-backend allgather_reducescatter)
MOE_COMMS = ("all_to_all", "allgather_reducescatter")
DEFAULT_SEQ_LEN = 2048  # prompt tokens; in decode also the cached context when none is given

# the command-line flag that sets each field, named in errors after the field itself, so the
# one message reads right from Python ("batch -3 ...") and from the shell ("(--batch)")
FLAGS = {"phase": "--phase", "batch": "--batch", "seq_len": "--seq-len",
         "context_len": "--context-len", "weight_dtype": "--weight-dtype",
         "act_dtype": "--act-dtype", "kv_dtype": "--kv-dtype", "group_size": "--group-size",
         "tp": "--tp", "pp": "--pp", "ep": "--ep", "attn_dp": "--attn-dp",
         "moe_comm": "--moe-comm",
         "attention": "--attention", "fused_norm": "--fused-norm/--unfused-norm",
         "mla_absorb": "--mla-absorb", "ceiling": "--ceiling", "memory_reserve": "--reserve"}


def field_error(field: str, value: object, problem: str) -> InputError:
    """``batch -3: must be a whole number >= 1 (--batch)``."""
    return InputError(f"{field} {value!r}: {problem} ({FLAGS.get(field, field)})")


def _whole(field: str, v: object, low: int) -> int:
    """A whole number >= ``low`` (numpy integers accepted), else an error naming ``field``."""
    if isinstance(v, bool) or not hasattr(v, "__index__"):
        raise field_error(field, v, f"must be a whole number >= {low}")
    n = v.__index__()
    if n < low:
        raise field_error(field, v, f"must be a whole number >= {low}")
    return n


@dataclass(frozen=True, slots=True)
class Scenario:
    """One forward step. Validated on construction; the same defaults for the Python API and
    the CLI.

    prefill: ``seq_len`` prompt tokens per sequence, nothing cached before.
    decode: one new token per sequence with ``context_len`` tokens already cached
    (default: ``seq_len``, i.e. a 2048-token context).
    chunked_prefill: ``seq_len`` new prompt tokens per sequence with ``context_len`` cached
    (default 0).
    ``attn_dp``: attention data-parallel groups; the GPUs of a pipeline stage are
    ``tp * attn_dp``: attention (and dense feed-forward) weights are replicated per group,
    each group runs TP=``tp`` on its ``ceil(batch / attn_dp)`` sequences, and MoE layers
    spread over all of them with expert parallelism ``ep`` (which must divide
    ``tp * attn_dp``); tokens reach their experts by ``moe_comm`` (all-to-all dispatch and
    combine, or all-gather and reduce-scatter).
    Dtypes left as None come from the checkpoint's ``quantization_config``, else the device
    (bf16, or fp16 where bf16 is missing).
    """

    phase: str = "prefill"
    batch: int = 1
    seq_len: int = DEFAULT_SEQ_LEN
    context_len: int | None = None  # None: seq_len in decode, 0 otherwise
    weight_dtype: str | None = None
    act_dtype: str | None = None
    kv_dtype: str | None = None
    group_size: int | None = None  # weight quantization group (int4 default 128)
    tp: int = 1
    pp: int = 1
    ep: int = 1
    attn_dp: int = 1  # attention data-parallel groups (MoE experts over tp x attn_dp GPUs)
    moe_comm: str = "all_to_all"  # under attn_dp: all_to_all | allgather_reducescatter
    attention: str = "flash"
    fused_norm: bool = True  # residual add fused into the following norm
    mla_absorb: bool | None = None  # None: absorb in decode only (serving engines do)
    ceiling: str = "spec"  # spec | empirical
    memory_reserve: float = 0.10  # fraction of capacity kept free (allocator, CUDA context)

    def __post_init__(self) -> None:
        put = object.__setattr__
        if self.phase not in PHASES:
            raise field_error("phase", self.phase, f"use one of {', '.join(PHASES)}")
        for name in ("batch", "tp", "pp", "ep", "attn_dp"):
            put(self, name, _whole(name, getattr(self, name), 1))
        put(self, "seq_len", _whole("seq_len", self.seq_len, 1))
        if self.context_len is None:
            put(self, "context_len", self.seq_len if self.phase == "decode" else 0)
        context = _whole("context_len", self.context_len, 0)
        put(self, "context_len", context)
        if self.phase == "prefill" and context:
            raise field_error("context_len", context,
                              "prefill starts from an empty cache; use phase chunked_prefill "
                              "to add a chunk to a cached context")
        if self.phase == "decode" and context < 1:
            raise field_error("context_len", context,
                              "decode needs at least one cached token")
        if self.group_size is not None:
            put(self, "group_size", _whole("group_size", self.group_size, 1))
        if self.moe_comm not in MOE_COMMS:
            raise field_error("moe_comm", self.moe_comm, f"use one of {', '.join(MOE_COMMS)}")
        if self.attention not in ATTN_IMPLS:
            raise field_error("attention", self.attention, "use flash or unfused")
        if self.ceiling not in CEILINGS:
            raise field_error("ceiling", self.ceiling, "use spec or empirical")
        if not isinstance(self.fused_norm, bool):
            raise field_error("fused_norm", self.fused_norm, "must be True or False")
        if self.mla_absorb not in (None, True, False):
            raise field_error("mla_absorb", self.mla_absorb, "must be None (auto), True or False")
        r = self.memory_reserve
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0 <= r < 1:
            raise field_error("memory_reserve", r, "must be a fraction in [0, 1)")
        for name, allowed in (("weight_dtype", WEIGHT_DTYPES), ("act_dtype", ACT_DTYPES),
                              ("kv_dtype", KV_DTYPES)):
            v = getattr(self, name)
            if v is not None:
                put(self, name, check_dtype(v, allowed, name, FLAGS[name]))

    # ---- derived -------------------------------------------------------------------
    @property
    def new_tokens(self) -> int:
        """Tokens per sequence processed in this step."""
        return 1 if self.phase == "decode" else self.seq_len

    @property
    def cached_before(self) -> int:
        return 0 if self.phase == "prefill" else self.context_len  # type: ignore[return-value]

    @property
    def tokens_after(self) -> int:
        """Tokens per sequence held in the KV cache at the end of the step."""
        return self.cached_before + self.new_tokens

    @property
    def gpus(self) -> int:
        """GPUs the step runs on: tp x attn_dp per pipeline stage, pp stages."""
        return self.tp * self.attn_dp * self.pp

    def validate(self) -> Scenario:
        """Kept for callers of the earlier API: a Scenario is validated when it is built."""
        return self
