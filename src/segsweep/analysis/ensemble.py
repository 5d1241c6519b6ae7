"""An ensemble of a configuration's runs (seeds, folds): their probabilities averaged at native resolution.

Averaging the softmax / sigmoid outputs of several trained networks, then thresholding (binary: ``p̄ > 0.5``)
or taking the arg-max (multi-class), is how nnU-Net ships its five folds (Isensee et al., Nat Methods 18,
203-211, 2021); it removes single-seed outliers. `predict` can use the same two functions on probabilities it
computes; the study's evaluation (`segsweep.analysis.final`) uses them on the runs' saved ones
(`segsweep.training.native_predictions`, quantised to 1/255).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segsweep.errors import DataError


def average_probabilities(probs: Sequence[np.ndarray]) -> np.ndarray:
    """``p̄ = (1/R) Σ_r p_r`` over the R runs' probability maps of one image (each [C, h, w] or [h, w], same
    shape), as float32."""
    if not probs:
        raise DataError("an ensemble needs at least one run's probabilities")
    shapes = {tuple(np.shape(p)) for p in probs}
    if len(shapes) != 1:
        raise DataError(f"the runs' probability maps differ in shape: {sorted(shapes)}")
    return np.mean(np.stack([np.asarray(p, dtype=np.float32) for p in probs]), axis=0, dtype=np.float64).astype(
        np.float32
    )


def labels_from_probabilities(prob: np.ndarray) -> np.ndarray:
    """The label map of a probability map: one channel ([1, h, w] or [h, w], sigmoid) → ``p > 0.5`` as 0/1;
    C ≥ 2 channels (softmax over background and classes) → the arg-max (class ids). uint8 [h, w]."""
    prob = np.asarray(prob)
    if prob.ndim == 2:
        return (prob > 0.5).astype(np.uint8)
    if prob.shape[0] == 1:
        return (prob[0] > 0.5).astype(np.uint8)
    return prob.argmax(0).astype(np.uint8)
