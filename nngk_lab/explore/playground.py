"""The 2-D toy problem and the playground's view of it: decision regions, a query's
neighbours and class probabilities. Everything returns plain tensors, arrays or dataclasses; ``viz`` draws them
and ``widgets`` wires them to sliders."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernel.classify import kernel_predict_log_probs
from .neighbours import QueryNeighbours, query_neighbours

# --------------------------------------------------------------------------- 2-D toy

def toy_problem(num_classes: int = 3, per_class: int = 15, spread: float = 0.9,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D centres of ``num_classes`` Gaussian blobs on a circle: ``(centres (N, 2), labels (N,))``."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.arange(num_classes, dtype=torch.float64) * (2 * torch.pi / num_classes)
    means = torch.stack([angles.cos(), angles.sin()], 1) * 2.0
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    centres = means[labels] + spread * torch.randn(labels.numel(), 2, generator=g, dtype=torch.float64)
    return centres, labels


def plane_grid(centres: torch.Tensor, resolution: int) -> tuple[torch.Tensor, tuple[float, ...]]:
    """Points (resolution^2, 2) covering the centres with a margin, row by row from the
    bottom, and their extent (left, right, bottom, top) for imshow."""
    lo, hi = centres.min(0).values - 1.0, centres.max(0).values + 1.0
    xs = torch.linspace(float(lo[0]), float(hi[0]), resolution, dtype=torch.float64)
    ys = torch.linspace(float(lo[1]), float(hi[1]), resolution, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1), (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))


RESOLUTION = 80  # grid points per side: 6,400 points keep a sigma or K move well under a second


@dataclass(frozen=True)
class Regions:
    """The classifier's class probabilities over a grid of the plane: ``probabilities``
    (R, R, C), rows from the bottom, covering ``extent`` (left, right, bottom, top)."""

    probabilities: torch.Tensor
    extent: tuple[float, float, float, float]


@dataclass
class PlaygroundView:
    """What the playground shows for one (sigma, K, query, weighted centre)."""

    centres: torch.Tensor          # (N, 2)
    labels: torch.Tensor           # (N,)
    log_weights: torch.Tensor      # (N,) all 0 except the weighted centre's
    query: torch.Tensor            # (2,)
    sigma: float
    k: int
    centre: int                    # the centre whose weight the slider sets
    regions: Regions
    neighbours: QueryNeighbours    # the query's K nearest centres, nearest first
    probabilities: torch.Tensor    # (C,) the query's class probabilities

    @property
    def num_classes(self) -> int:
        return self.probabilities.shape[0]

    @property
    def centre_name(self) -> str:
        """The weighted centre as a student finds it: by its class and its rank of distance
        to the query ("class 1, 3rd nearest")."""
        return dict((index, name) for name, index in centre_choices(self.centres, self.labels, self.query))[self.centre]

    def html(self) -> str:
        predicted = int(self.probabilities.argmax())
        probs = ", ".join(f"class {c}: {float(p):.3f}" for c, p in enumerate(self.probabilities))
        w = float(self.log_weights[self.centre].exp())
        position = (self.neighbours.indices == self.centre).nonzero()
        if len(position):
            share = float(self.neighbours.kernels[position[0, 0]] / self.neighbours.kernels.sum())
            among = f"neighbour {int(position[0, 0]) + 1} of {self.k}, {share:.0%} of the kernel sum"
        else:
            among = "not among the K nearest: its weight changes nothing here"
        return (f"<b>predicted class {predicted}</b> (sigma = {self.sigma:.3g}, K = {self.k}); "
                f"p(class | query): {probs}<br>weighted centre ({self.centre_name}, magenta square): "
                f"weight w = {w:.3g}, {among}")


def ordinal(n: int) -> str:
    """1 -> "1st", 2 -> "2nd", 11 -> "11th", 23 -> "23rd"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def centre_choices(centres: torch.Tensor, labels: torch.Tensor, query) -> list[tuple[str, int]]:
    """Every centre as ``(name, index)``, nearest to ``query`` first, named by its class and
    its rank of distance ("class 1, nearest", "class 0, 2nd nearest", ...): what a student
    can pick a centre by, where an index into the centres says nothing. Ties keep index order."""
    query = torch.as_tensor(query, dtype=torch.float64)
    distances = ((centres.double() - query) ** 2).sum(1)
    order = sorted(range(len(distances)), key=lambda i: (float(distances[i]), i))
    return [(f"class {int(labels[i])}, {'nearest' if rank == 1 else ordinal(rank) + ' nearest'}", i)
            for rank, i in enumerate(order, start=1)]


def boosted_log_weights(num_centres: int, centre: int, log_weight: float) -> torch.Tensor:
    """Log-weights (float64) that are 0 (weight 1) except ``centre``'s, ``log_weight``."""
    log_weights = torch.zeros(num_centres, dtype=torch.float64)
    log_weights[centre] = log_weight
    return log_weights


def decision_regions(centres: torch.Tensor, labels: torch.Tensor, sigma: float, k: int,
                     log_weights: torch.Tensor, resolution: int = RESOLUTION) -> Regions:
    """The kernel classifier's class probabilities at every point of a grid covering the
    centres with a margin."""
    grid, extent = plane_grid(centres, resolution)
    probs = kernel_predict_log_probs(grid, centres.double(), labels, sigma, k, int(labels.max()) + 1, log_weights).exp()
    return Regions(probs.reshape(resolution, resolution, -1), extent)


def playground_view(centres: torch.Tensor, labels: torch.Tensor, sigma: float, k: int, x: float, y: float,
                    centre: int = 0, log_weight: float = 0.0, regions: Regions | None = None) -> PlaygroundView:
    """The playground's callback: the query at (x, y), its K nearest centres and class
    probabilities, with every kernel weight 1 except ``centre``'s, ``exp(log_weight)``.

    ``regions`` reuses decision regions computed for the same sigma, K and weights.
    """
    if not 0 <= centre < centres.shape[0]:
        raise IndexError(f"centre {centre} is out of range: there are {centres.shape[0]} centres")
    k = max(1, min(int(k), centres.shape[0]))
    centres = centres.double()
    log_weights = boosted_log_weights(centres.shape[0], centre, log_weight)
    query = torch.tensor([x, y], dtype=torch.float64)
    regions = regions if regions is not None else decision_regions(centres, labels, sigma, k, log_weights)
    neighbours = query_neighbours(query, centres, labels, k, sigma, log_weights)
    probs = kernel_predict_log_probs(query.unsqueeze(0), centres, labels, sigma, k, int(labels.max()) + 1,
                                 log_weights).exp()[0]
    return PlaygroundView(centres, labels, log_weights, query, float(sigma), k, int(centre), regions,
                          neighbours, probs)
