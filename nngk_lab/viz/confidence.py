"""Figures of the classifier's certainty (:mod:`nngk_lab.explore.confidence`): it grows
away from the data, and it is as high for images of classes the bank does not hold."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..explore.confidence import HeldoutConfidence, Ray
from .style import CORRECT_COLOUR, HELDOUT_COLOUR, WRONG_COLOUR


def confidence_ray_figure(ray: Ray, title: str = "a query walking away from the data") -> Figure:
    """The largest class probability against the query's distance from the centres' mean."""
    fig = Figure(figsize=(6, 2.8), layout="constrained")
    ax = fig.subplots()
    ax.plot(ray.distances.numpy(), ray.confidence.numpy(), color="black")
    ax.set_xlabel("distance of the query from the centres' mean")
    ax.set_ylabel("largest p(class | x)")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=10)
    return fig


def confidence_histograms(conf: HeldoutConfidence, threshold: float = 0.9) -> Figure:
    """Histograms of the largest class probability: test images classified right, test
    images classified wrong, and held-out images (always wrong), each as a share of its group."""
    fig = Figure(figsize=(7, 3), layout="constrained")
    ax = fig.subplots()
    bins = np.linspace(0, 1, 21)
    right = conf.test_correct.numpy()
    groups = ((conf.test.numpy()[right], CORRECT_COLOUR, "test images, right"),
              (conf.test.numpy()[~right], WRONG_COLOUR, "test images, wrong"),
              (conf.heldout.numpy(), HELDOUT_COLOUR, "held-out images (always wrong)"))
    for values, colour, name in groups:
        if len(values):
            ax.hist(values, bins=bins, weights=np.full(len(values), 1 / len(values)), histtype="step",
                    linewidth=2, color=colour, label=f"{name} ({len(values)})")
    ax.axvline(threshold, color="black", linestyle=":", linewidth=1)
    ax.set_xlabel("the classifier's largest p(class | x)")
    ax.set_ylabel("share of the group")
    ax.set_title(f"how sure the classifier is (sigma = {conf.sigma:g}, K = {conf.k})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    return fig
