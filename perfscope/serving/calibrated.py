"""Serving predictions on a measured calibration (``perfscope predict --calibration FILE``).

A ``perfscope.calibration/1`` file (``perfscope profile --torch-model --calibration-out``)
says how far a framework on a device runs from the roofline: per op kind a scale on the
roofline time and a fixed cost per framework call, plus a framework term per step
(perfscope/calibration.py). ``calibrate`` resolves it against a step model's ops once, and the
step model then applies it to every decode, prefill and mixed step it prices, exactly as
``perfscope.calibration.calibrated_times`` does for one analysed step (tests check the two
agree). The calibration then stands in for the engine's kernel efficiencies and fixed kernel,
collective and step costs (it measured them); the engine's scheduler (budget, batching,
memory) and its per-request overhead still apply.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from perfscope.calibration import Calibration, check_applicable, op_calls
from perfscope.serving.stepmodel import CalibrationArrays, PhaseModel, StepModel


def calibrate(sm: StepModel, cal: Calibration) -> tuple[StepModel, list[str]]:
    """``sm`` pricing every step with ``cal``; raises InputError when ``cal`` was fitted for
    another device or ceiling (``check_applicable``); returns notes on what it could not
    calibrate (kinds without a factor keep their roofline time)."""
    from perfscope.analysis import analyze

    probe = analyze(sm.model, sm.hw, dataclasses.replace(sm.scenario, phase="decode",
                                                          batch=1, seq_len=1, context_len=1))
    notes = check_applicable(probe, cal)
    missing: set[str] = set()
    arrays = {pm.phase: _arrays(pm, cal, missing) for pm in (sm.decode, sm.fill)}
    if missing:
        notes.append(f"no calibration for {', '.join(sorted(missing))}: roofline time kept")
    return dataclasses.replace(sm, calibration=arrays), notes


def _arrays(pm: PhaseModel, cal: Calibration, missing: set[str]) -> CalibrationArrays:
    scale, fixed = np.ones(len(pm.names)), np.zeros(len(pm.names))
    for i, (name, kind) in enumerate(zip(pm.names, pm.kinds, strict=True)):
        if pm.link[i]:
            continue
        k = cal.kinds.get(kind)
        if k is None:
            missing.add(kind)
            continue
        scale[i], fixed[i] = k.scale, k.fixed_s * op_calls(cal, name, kind)
    fw = cal.framework
    return CalibrationArrays(scale, fixed, (~pm.link).astype(float),
                             fw.scale if fw else 0.0, fw.fixed_s if fw else 0.0)
