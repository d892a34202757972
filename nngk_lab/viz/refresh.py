"""Figures of the bank refresh (:mod:`nngk_lab.explore.refresh`)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..explore.refresh import RefreshRun


def refresh_figure(runs: dict[int, RefreshRun]) -> Figure:
    """Left: the loss of every step for each update interval, refreshes marked. Right: at
    each refresh after the first, the share of every image's K neighbours that stayed
    its neighbours, and how far the centres drifted."""
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    loss_ax, overlap_ax = fig.subplots(1, 2, width_ratios=[1.6, 1])
    drift_ax = overlap_ax.twinx()
    for (interval, run), colour in zip(sorted(runs.items()), ("tab:blue", "tab:orange", "tab:green", "tab:purple")):
        epochs = np.arange(len(run.losses)) / run.steps_per_epoch
        loss_ax.plot(epochs, run.losses, color=colour, linewidth=1, label=f"update_interval {interval}")
        for step in run.refresh_steps[1:]:
            loss_ax.axvline(step / run.steps_per_epoch, color=colour, linestyle=":", linewidth=1)
        at = [step / run.steps_per_epoch for step in run.refresh_steps[1:]]
        overlap_ax.plot(at, run.overlap, "o-", color=colour, label=f"interval {interval}: neighbours kept")
        drift_ax.plot(at, run.drift, "s--", color=colour, alpha=0.6, label=f"interval {interval}: drift")
    loss_ax.set_xlabel("epoch (dotted: a refresh)")
    loss_ax.set_ylabel("loss of the step's batch")
    loss_ax.set_yscale("log")
    loss_ax.legend(fontsize=8)
    loss_ax.set_title("the loss, step by step, against stored centres", fontsize=10)
    overlap_ax.set_xlabel("epoch of the refresh")
    overlap_ax.set_ylabel("share of K neighbours kept (circles)")
    overlap_ax.set_ylim(0, 1.05)
    drift_ax.set_ylabel("centre drift / nearest-centre distance (squares)")
    drift_ax.set_ylim(bottom=0)
    handles = overlap_ax.get_legend_handles_labels()[0] + drift_ax.get_legend_handles_labels()[0]
    overlap_ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="lower right")
    overlap_ax.set_title("what a refresh changes", fontsize=10)
    return fig
