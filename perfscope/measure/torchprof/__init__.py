"""Profile real PyTorch models on the roofline (``perfscope profile --torch-model / --module``).

    from perfscope.measure.torchprof.profile import ProfileOptions, profile_transformers
    r = profile_transformers("llama-3.1-8b", ProfileOptions(layers=2, seq_len=128))
    r.to_json()   # perfscope.profile/1: predicted beside measured, op by op

Pipeline, one module each: ``build`` (a transformers model from its config with random
weights, or the user's module from a factory), ``instrument`` (module and function scopes
shared by torch.profiler, FlopCounterMode, a byte counter and a call timer), ``run`` (warm-up,
timed steps, the counting run, the timing run, the profiled steps), ``roles`` (which analytic op
each call computes), ``attribute`` (time, FLOPs and bytes per analytic op, module, aten op and
kernel), ``join`` (beside the analytic graph; framework rows for the rest), ``ceilings`` (the
device's measured roofline), ``result`` (the JSON), ``profile`` (end to end; calibration fit).
torch and transformers are imported inside functions only.
"""
