"""The trainable playground: hard 2-D toy data (XOR, spirals, rings) mapped to a 2-D
embedding, trained step by step with the kit's own loss module
(:class:`nngk_lab.kernel.nngk_loss.NNGKLoss`), its bank refreshed only when asked.

The embedding is either **free** (one trainable 2-D point per example, starting at the
example's own position) or a small **MLP** of the example's coordinates. A step embeds
every example and takes one Adam step on the NNGK loss against the bank: the centres as
embedded at the last refresh, and each one's K nearest other centres found then. Between
refreshes the centres are stale; :class:`ToyTraining` records each step's loss, the
refreshes and the embeddings' mean length, which grows without bound when nothing
normalises them (a larger scale makes every kernel sharper, so the loss keeps falling).
Everything is on the CPU and deterministic given the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..errors import ConfigError
from ..kernel.classify import kernel_predict_log_probs
from ..kernel.nngk_loss import NNGKLoss, WithIndex

TOY_DATASETS = ("xor", "spirals", "rings")
EMBEDDINGS = ("free", "mlp")


def toy_data(name: str, per_class: int = 60, noise: float = 0.05, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(points (N, 2) float32, labels (N,))`` of a toy problem no straight line separates:

    - ``"xor"``: uniform on [-1, 1]^2, class 1 where x and y have opposite signs (2 classes);
    - ``"spirals"``: two interleaved spirals of 1.5 turns (2 classes);
    - ``"rings"``: three concentric rings of radii 0.3, 0.65 and 1 (3 classes).

    ``noise`` is the standard deviation of Gaussian jitter added to every point.
    """
    if name not in TOY_DATASETS:
        raise ConfigError(f"toy dataset {name!r} is not one of {', '.join(TOY_DATASETS)}")
    if per_class < 2 or not (math.isfinite(noise) and noise >= 0):
        raise ConfigError(f"per_class must be at least 2 and noise finite and >= 0, got {per_class} and {noise}")
    g = torch.Generator().manual_seed(seed)
    if name == "xor":
        # Drawn per quadrant, so both classes have exactly per_class points.
        signs = torch.tensor([[1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=torch.float32)
        labels = torch.arange(2).repeat_interleave(per_class)
        quadrant = 2 * labels + torch.arange(2 * per_class) % 2
        points = torch.rand(2 * per_class, 2, generator=g) * signs[quadrant]
    else:
        num_classes = 2 if name == "spirals" else 3
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        t = torch.rand(len(labels), generator=g)
        if name == "spirals":
            radius, angle = 0.1 + 0.9 * t, 3 * math.pi * t + math.pi * labels
        else:
            radius, angle = torch.tensor([0.3, 0.65, 1.0])[labels], 2 * math.pi * t
        points = torch.stack([radius * angle.cos(), radius * angle.sin()], 1)
    return points + noise * torch.randn(points.shape, generator=g), labels


class FreeEmbedding(nn.Module):
    """One trainable point per example: ``forward(indices)`` is their rows."""

    def __init__(self, start: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(start.clone())

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.table[indices]


class Normalised(nn.Module):
    """A module's output scaled to unit length, as the kit's networks end with ``normalise``."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.inner(inputs), dim=1)


def toy_model(kind: str, points: torch.Tensor, unit_length: bool, hidden: int = 16, seed: int = 0) -> nn.Module:
    """A free embedding (one random point per row of ``points``) or a 2-hidden-layer tanh MLP, initialised from ``seed``."""
    if kind not in EMBEDDINGS:
        raise ConfigError(f"embedding {kind!r} is not one of {', '.join(EMBEDDINGS)}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        # Free points start scrambled (the classes mixed), at about the data's scale.
        model = FreeEmbedding(0.5 * torch.randn(points.shape)) if kind == "free" else nn.Sequential(
            nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 2))
    return Normalised(model) if unit_length else model


@dataclass(frozen=True)
class ToyView:
    """What the trainable playground shows after some steps."""

    dataset: str
    kind: str
    unit_length: bool
    sigma: float
    points: torch.Tensor          # (N, 2) the inputs
    labels: torch.Tensor          # (N,)
    embeddings: torch.Tensor      # (N, 2) every example embedded now
    centres: torch.Tensor         # (N, 2) the bank: the embeddings at the last refresh
    losses: list[float]           # the loss of every step, against the bank of its time
    norms: list[float]            # mean embedding length before the first step and after each
    refresh_steps: list[int]      # the steps before which the bank was refreshed
    staleness: float              # mean |embedding - its centre| / sigma
    regions: torch.Tensor | None  # (R, R, C) the classifier's probabilities over the input plane (MLP only)
    extent: tuple[float, float, float, float]

    @property
    def step(self) -> int:
        return len(self.losses)

    def html(self) -> str:
        loss = f"loss {self.losses[-1] + 0.0:.4f}" if self.losses else "no step yet"
        since = self.step - self.refresh_steps[-1]
        return (f"<b>step {self.step}</b>: {loss} (against a bank refreshed {since} steps ago, "
                f"refreshes so far: {len(self.refresh_steps)}); mean embedding length {self.norms[-1]:.3g}; "
                f"an example is {self.staleness:.2f} sigma from its bank centre on average")


class ToyTraining:
    """A model, its :class:`NNGKLoss` (bank and kernel weights) and Adam on one toy problem.

    ``train(n)`` takes n full-batch steps without touching the bank; ``refresh()`` embeds
    every example anew into the bank and finds the neighbours again (also done once at
    the start). ``view()`` is what the playground draws."""

    def __init__(self, dataset: str = "xor", kind: str = "mlp", unit_length: bool = True, sigma: float = 0.2,
                 num_neighbours: int = 10, lr: float = 0.03, per_class: int = 60, seed: int = 0):
        self.dataset, self.kind, self.unit_length = dataset, kind, bool(unit_length)
        self.points, self.labels = toy_data(dataset, per_class, seed=seed)
        self.inputs = torch.arange(len(self.labels)) if kind == "free" else self.points
        self.model = toy_model(kind, self.points, self.unit_length, seed=seed)
        self.loss_fn = NNGKLoss(len(self.labels), sigma, num_neighbours, int(self.labels.max()) + 1, fused=False)
        self.optimiser = torch.optim.Adam([*self.model.parameters(), *self.loss_fn.parameters()], lr=lr)
        self.losses: list[float] = []
        self.refresh_steps: list[int] = []
        self.norms = [self._mean_norm()]
        self.refresh()

    @property
    def sigma(self) -> float:
        return self.loss_fn.sigma

    @property
    def centres(self) -> torch.Tensor:
        return self.loss_fn.bank.features

    @torch.no_grad()
    def embeddings(self) -> torch.Tensor:
        return self.model(self.inputs)

    def _mean_norm(self) -> float:
        return float(self.embeddings().norm(dim=1).mean())

    def refresh(self) -> None:
        """The bank refresh, as the kit's trainer does it: NNGKLoss.refresh over every example."""
        loader = DataLoader(WithIndex(TensorDataset(self.inputs, self.labels)), batch_size=len(self.labels))
        self.loss_fn.refresh(self.model, loader)
        self.refresh_steps.append(len(self.losses))

    def train(self, steps: int, refresh_every: int = 0) -> None:
        """``steps`` Adam steps, each on every example (one step is one epoch), against the
        bank as it is; with ``refresh_every`` > 0 the bank is refreshed before any step that
        finds it ``refresh_every`` steps old (the kit's ``update_interval``)."""
        if steps < 0 or refresh_every < 0:
            raise ConfigError(f"steps and refresh_every must be >= 0, got {steps} and {refresh_every}")
        indices = torch.arange(len(self.labels))
        for _ in range(steps):
            if refresh_every and len(self.losses) - self.refresh_steps[-1] >= refresh_every:
                self.refresh()
            loss = self.loss_fn(self.model(self.inputs), self.labels, indices)
            self.optimiser.zero_grad(set_to_none=True)
            loss.backward()
            self.optimiser.step()
            self.losses.append(float(loss.detach()))
            self.norms.append(self._mean_norm())

    @torch.no_grad()
    def input_regions(self, resolution: int = 40) -> tuple[torch.Tensor | None, tuple[float, float, float, float]]:
        """The kernel classifier's class probabilities (R, R, C) over a grid of the input
        plane, each grid point embedded by the MLP and classified against the bank (None
        for free embeddings, which embed only the examples), and the grid's extent."""
        lo, hi = float(self.points.min()) - 0.2, float(self.points.max()) + 0.2
        extent = (lo, hi, lo, hi)
        if self.kind == "free":
            return None, extent
        axis = torch.linspace(lo, hi, resolution)
        gx, gy = torch.meshgrid(axis, axis, indexing="xy")
        grid = self.model(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1))
        num_classes = self.loss_fn.num_classes
        log_probs = kernel_predict_log_probs(grid, self.centres, self.labels, self.sigma, self.loss_fn.num_neighbours,
                                             num_classes, self.loss_fn.log_weights.detach())
        return log_probs.exp().reshape(resolution, resolution, num_classes), extent

    def view(self) -> ToyView:
        embeddings = self.embeddings()
        regions, extent = self.input_regions()
        return ToyView(self.dataset, self.kind, self.unit_length, self.sigma, self.points, self.labels, embeddings,
                       self.centres.clone(), list(self.losses), list(self.norms), list(self.refresh_steps),
                       float((embeddings - self.centres).norm(dim=1).mean()) / self.sigma, regions, extent)
