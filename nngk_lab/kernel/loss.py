"""The nearest-neighbour Gaussian kernel classifier and its loss (Meyer et al., ICIP 2018).

For a query embedding ``x`` and its K nearest centres ``c_i`` (stored embeddings of
training images, labels ``y_i``, kernel weights ``w_i = exp(v_i)``)::

    k_i(x)   = w_i * exp(-||x - c_i||^2 / (2 sigma^2))
    p(c | x) = sum_{i in N_K(x), y_i = c} k_i(x) / sum_{i in N_K(x)} k_i(x)

Everything here works with ``log k_i = v_i - ||x - c_i||^2 / (2 sigma^2)`` and per-class
log-sum-exp, so probabilities stay exact where ``exp`` of a large distance underflows
to 0 in float32 (the original clamped such sums to 1e-10). All functions are vectorised
over the batch and run on whatever device their inputs are on.

**When the true class has no neighbour among the K**: ``p(y | x)`` is exactly 0, its
log-probability is ``-inf`` and no gradient can raise it (moving ``x`` only re-weights
neighbours of other classes). :func:`kernel_nll` therefore leaves such samples out of
the mean loss, reports how many there were (``KernelLoss.present``), and never returns
NaN or inf. The original instead counted them as ``-log(1e-10) ~ 23`` with zero gradient.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

# neighbour_logits takes every query-centre dot product at once when N <= this x K. On 2
# CPU cores the crossover with gathering the K neighbours was at N ~ 30 K for batch 32 and
# N ~ 60-100 K for batch 128 (python -m bench.bench_loss, docs/performance.md).
DENSE_DOT_MAX_CENTRES_PER_NEIGHBOUR = 30


def check_loss_inputs(features: torch.Tensor, centres: torch.Tensor, neighbours: torch.Tensor,
                      sigma: float | torch.Tensor) -> None:
    """Raise ValueError unless features (B, D), centres (N, D), neighbours (B, K) and sigma fit:
    sigma a positive finite number, or a 0-dim tensor (a learnt sigma, positive by its
    construction as ``exp(log sigma)``; its value is not read, so the host never waits for it)."""
    if isinstance(sigma, torch.Tensor):
        if sigma.dim() != 0:
            raise ValueError(f"sigma as a tensor must have 0 dimensions, got shape {tuple(sigma.shape)}")
    elif not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    if features.dim() != 2 or centres.dim() != 2 or features.shape[1] != centres.shape[1]:
        raise ValueError(f"features {tuple(features.shape)} and centres {tuple(centres.shape)} "
                         "must be (B, D) and (N, D) with the same D")
    if neighbours.dim() != 2 or neighbours.shape[0] != features.shape[0]:
        raise ValueError(f"neighbours {tuple(neighbours.shape)} must be (B, K) with B = {features.shape[0]}")


def neighbour_logits(features: torch.Tensor, centres: torch.Tensor, neighbours: torch.Tensor,
                     log_weights: torch.Tensor, sigma: float,
                     centre_sq_norms: torch.Tensor | None = None) -> torch.Tensor:
    """Log kernel values ``v_i - ||x - c_i||^2 / (2 sigma^2)`` for each query's neighbours.

    Shapes: features (B, D), centres (N, D), neighbours (B, K) indices into centres,
    log_weights (N,). Returns (B, K). Centres carry no gradient; gradients reach
    ``features`` and ``log_weights``. ``centre_sq_norms`` (N,), if given, saves
    recomputing ``||c_i||^2`` for the gathered centres.
    """
    check_loss_inputs(features, centres, neighbours, sigma)
    batch, k = neighbours.shape
    centres = centres.detach()
    # ||x - c||^2 = ||x||^2 + ||c||^2 - 2 x.c: only the dot products x.c need the centres.
    if centres.shape[0] <= DENSE_DOT_MAX_CENTRES_PER_NEIGHBOUR * k:
        # All B x N dot products in one matrix product, then the K needed: when N is within
        # a few dozen K this beats gathering (B, K, D) centres (bench/bench_loss.py).
        cross = (features @ centres.T).gather(1, neighbours)
        c_sq = (centres.square().sum(1) if centre_sq_norms is None else centre_sq_norms.detach())[neighbours]
    else:
        # (B, K, D) gathered centres, read once forward and once backward (no (B, K, D)
        # differences are materialised or differentiated). index_select beats advanced indexing.
        gathered = centres.index_select(0, neighbours.reshape(-1)).view(batch, k, -1)
        c_sq = gathered.square().sum(-1) if centre_sq_norms is None else centre_sq_norms.detach()[neighbours]
        cross = torch.bmm(gathered, features.unsqueeze(-1)).squeeze(-1)
    sq_dists = (features.square().sum(-1, keepdim=True) + c_sq - 2.0 * cross).clamp_min(0.0)
    return log_weights[neighbours] - sq_dists / (2.0 * sigma * sigma)


def class_log_probs(logits: torch.Tensor, neighbour_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class log-probabilities (B, C) from neighbour logits (B, K) and their labels.

    Each class's log-sum-exp is shifted by that class's own maximum, so a class whose
    kernels are all far below the best neighbour's still gets an exact, finite value.
    Classes with no neighbour among the K get ``-inf`` (probability exactly 0); a logit of
    ``-inf`` is no neighbour (:func:`kernel_nll_with_batch` masks kernels so).
    """
    if neighbour_labels.shape != logits.shape:
        raise ValueError(f"neighbour labels {tuple(neighbour_labels.shape)} must match logits {tuple(logits.shape)}")
    # Checked on the CPU only: on a GPU the check would make every training step wait for
    # the device; there an out-of-range label trips scatter's own device-side assertion.
    if neighbour_labels.device.type == "cpu" and neighbour_labels.numel() \
            and int(neighbour_labels.max()) >= num_classes:
        raise ValueError(f"a neighbour has label {int(neighbour_labels.max())} but num_classes is {num_classes}")
    batch = logits.shape[0]
    neg_inf = torch.full((batch, num_classes), -math.inf, dtype=logits.dtype, device=logits.device)
    class_max = neg_inf.scatter_reduce(1, neighbour_labels, logits.detach(), reduce="amax")
    present = class_max > -math.inf  # a class with a finite kernel among the neighbours
    shift = class_max.gather(1, neighbour_labels)
    # A class whose kernels are all -inf has max -inf: shifting by 0 keeps exp(-inf) = 0, not NaN.
    shifted = torch.exp(logits - torch.where(shift > -math.inf, shift, 0.0))
    sums = torch.zeros_like(neg_inf).scatter_add(1, neighbour_labels, shifted)
    # where() keeps log(0) of absent classes out of the graph, so no NaN gradient appears.
    class_lse = torch.log(torch.where(present, sums, 1.0)) + torch.where(present, class_max, 0.0)
    total_lse = torch.logsumexp(logits, dim=1, keepdim=True)
    return torch.where(present, class_lse - total_lse, neg_inf)


def true_class_log_prob(logits: torch.Tensor, neighbour_labels: torch.Tensor,
                        targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log p(y | x)`` for each query's own label, without building (B, C) tensors.

    Returns ``(log_prob, present)``, both (B,): ``present`` is False where no neighbour
    has the query's label (a logit of ``-inf`` is no neighbour), and ``log_prob`` is
    ``-inf`` there.
    """
    same = (neighbour_labels == targets.unsqueeze(1)) & (logits > -math.inf)
    present = same.any(dim=1)
    true_logits = logits.masked_fill(~same, -math.inf)
    # Rows with no true neighbour get zeros so logsumexp stays finite; they are masked out.
    true_logits = torch.where(present.unsqueeze(1), true_logits, 0.0)
    log_prob = torch.logsumexp(true_logits, dim=1) - torch.logsumexp(logits, dim=1)
    return torch.where(present, log_prob, -math.inf), present


def kernel_log_probs(features: torch.Tensor, centres: torch.Tensor, centre_labels: torch.Tensor,
                     neighbours: torch.Tensor, log_weights: torch.Tensor, sigma: float,
                     num_classes: int) -> torch.Tensor:
    """Log-probabilities (B, num_classes) of the nearest-neighbour Gaussian kernel classifier.

    features (B, D), centres (N, D), centre_labels (N,), neighbours (B, K) indices into
    centres, log_weights (N,) (``v_i``, the kernel weight is ``exp(v_i)``), sigma > 0.
    Classes with no neighbour among the K get ``-inf``.
    """
    logits = neighbour_logits(features, centres, neighbours, log_weights, sigma)
    return class_log_probs(logits, centre_labels[neighbours], num_classes)


class KernelLoss(NamedTuple):
    loss: torch.Tensor       # scalar: mean -log p(y|x) over samples whose class is present
    logits: torch.Tensor     # (B, K) neighbour logits, for accuracy without recomputing
    present: torch.Tensor    # (B,) bool: the true class is among the K neighbours
    predictions: torch.Tensor | None = None  # (B,) predicted classes, where computed on the way


def kernel_nll(features: torch.Tensor, targets: torch.Tensor, centres: torch.Tensor,
               centre_labels: torch.Tensor, neighbours: torch.Tensor, log_weights: torch.Tensor,
               sigma: float, centre_sq_norms: torch.Tensor | None = None) -> KernelLoss:
    """The training loss: mean ``-log p(y | x)`` over the batch.

    Samples whose true class has no neighbour among the K are left out of the mean (see
    the module docstring); the loss is 0 with a zero gradient if that is every sample.
    No host-device synchronisation happens here.
    """
    logits = neighbour_logits(features, centres, neighbours, log_weights, sigma, centre_sq_norms)
    loss, present = _mean_nll(logits, centre_labels[neighbours], targets)
    return KernelLoss(loss, logits, present)


def _mean_nll(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``-log p(y | x)`` over the queries whose class is present, and ``present``."""
    log_prob, present = true_class_log_prob(logits, labels, targets)
    return -torch.where(present, log_prob, 0.0).sum() / present.sum().clamp_min(1), present


def kernel_nll_with_batch(features: torch.Tensor, targets: torch.Tensor, index: torch.Tensor,
                          centres: torch.Tensor, centre_labels: torch.Tensor, neighbours: torch.Tensor,
                          log_weights: torch.Tensor, sigma: float, num_classes: int,
                          centre_sq_norms: torch.Tensor | None = None) -> KernelLoss:
    """:func:`kernel_nll` where the batch's own images are centres at their current embeddings.

    Each query's kernels are those of its K nearest stored centres and of every other
    image of its batch, whose centre is its embedding now, with the gradient reaching
    both sides. A stored neighbour that is in the batch counts once, at its current
    embedding. ``index`` (B,) gives each batch image's place among the centres (distinct).
    The batch's kernel weights are its images' own. Returns the loss with the
    ``predictions`` of the same classifier, and ``present`` as for :func:`kernel_nll`.
    """
    check_loss_inputs(features, centres, neighbours, sigma)
    stored = neighbour_logits(features, centres, neighbours, log_weights, sigma, centre_sq_norms)
    stored = stored.masked_fill(torch.isin(neighbours, index), -math.inf)
    sq_norms = features.square().sum(1)
    sq_dists = (sq_norms.unsqueeze(1) + sq_norms.unsqueeze(0) - 2.0 * features @ features.T).clamp_min(0.0)
    itself = torch.eye(len(targets), dtype=torch.bool, device=features.device)
    fresh = (log_weights[index].unsqueeze(0) - sq_dists / (2.0 * sigma * sigma)).masked_fill(itself, -math.inf)
    logits = torch.cat([stored, fresh], dim=1)
    labels = torch.cat([centre_labels[neighbours], targets.unsqueeze(0).expand(len(targets), -1)], dim=1)
    loss, present = _mean_nll(logits, labels, targets)
    with torch.no_grad():
        predictions = class_log_probs(logits.detach(), labels, num_classes).argmax(1)
    return KernelLoss(loss, logits, present, predictions)


class KernelWeights(nn.Module):
    """The kernels' trainable parameters: the per-centre log-weights ``v_i`` (kernel weight
    ``w_i = exp(v_i)``), all 0 at start, and, given a starting ``sigma``, a learnt kernel
    width (a temperature), kept as ``log sigma`` so that it stays positive."""

    def __init__(self, num_centres: int, sigma: float | None = None):
        super().__init__()
        self.log_weights = nn.Parameter(torch.zeros(num_centres))
        if sigma is not None and not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"the starting sigma must be a positive finite number, got {sigma!r}")
        self.log_sigma = None if sigma is None else nn.Parameter(torch.tensor(math.log(sigma)))

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.detach().exp()

    @property
    def learnt_sigma(self) -> float | None:
        """The learnt kernel width now, or None where sigma is fixed."""
        return None if self.log_sigma is None else float(self.log_sigma.detach().exp())

    def sigma(self, fixed: float) -> float | torch.Tensor:
        """The kernel width the loss uses: the learnt one (a 0-dim tensor that gradients
        reach), else ``fixed``."""
        return fixed if self.log_sigma is None else self.log_sigma.exp()

    def forward(self) -> torch.Tensor:
        return self.log_weights
