"""The paper's analyses (SPEC §6): loss along the linear path between backdoored and defended
weights, weight-difference histograms, t-SNE of penultimate features, ACC/ASR per epoch."""
from __future__ import annotations

from .path import interpolate_state, loss_along_path
from .run_plots import KINDS, plot_run
from .tsne import penultimate_features
from .weights import weight_differences

__all__ = ["KINDS", "interpolate_state", "loss_along_path", "penultimate_features", "plot_run",
           "weight_differences"]
