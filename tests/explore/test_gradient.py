"""The kernel loss's gradient in closed form against autograd through the library's loss
and through a naive float64 loss."""

import pytest
import torch

from nngk_lab import explore


def naive_loss(x, y, centres, centre_labels, neighbours, log_weights, sigma):
    """Mean -log p(y | x), one query at a time, as the formula reads (float64)."""
    losses = []
    for xb, yb, nb in zip(x, y, neighbours):
        k = log_weights[nb].exp() * torch.exp(-((xb - centres[nb]) ** 2).sum(1) / (2 * sigma ** 2))
        losses.append(-torch.log(k[centre_labels[nb] == yb].sum() / k.sum()))
    return torch.stack(losses).mean()


def draw(seed, n=40, q=6, d=3, k=8, classes=3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n, d, generator=g, dtype=torch.float64)
    labels = torch.arange(n) % classes  # a query may still have no neighbour of its class: tests filter those
    x = torch.randn(q, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (q,), generator=g)
    neighbours = torch.cdist(x, centres).topk(k, largest=False).indices
    log_weights = 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y, centres, labels, neighbours, log_weights


@pytest.mark.parametrize("sigma", [0.3, 1.0, 4.0])
def test_closed_form_gradient_matches_autograd(sigma, seed):
    x, y, centres, labels, neighbours, log_weights = draw(seed)
    present = (labels[neighbours] == y.unsqueeze(1)).any(1)
    x = x[present].requires_grad_()
    y, neighbours = y[present], neighbours[present]
    library = explore.kernel_nll(x, y, centres, labels, neighbours, log_weights, sigma)
    naive = naive_loss(x, y, centres, labels, neighbours, log_weights, sigma)
    assert torch.allclose(library.loss, naive)
    (grad,) = torch.autograd.grad(naive, x)
    closed = explore.loss_gradient(x.detach(), y, centres, labels, neighbours, log_weights, sigma)
    torch.testing.assert_close(closed / len(x), grad)  # the loss is a mean over the queries


def test_no_own_class_neighbour_means_no_gradient():
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0])
    got = explore.loss_gradient(torch.tensor([[0.5, 0.5]], dtype=torch.float64), torch.tensor([1]), centres, labels,
                                torch.tensor([[0, 1]]), torch.zeros(2, dtype=torch.float64), 1.0)
    assert torch.equal(got, torch.zeros(1, 2, dtype=torch.float64))


def test_training_steps_point_towards_the_own_class(seed):
    centres, labels = explore.toy_problem(seed=seed)
    steps = explore.training_steps(centres, labels, sigma=0.5, k=10)
    assert steps.steps.shape == centres.shape and steps.k == 10
    # each step equals minus the gradient of that centre's loss against its other centres
    i = int(torch.randint(len(centres), (1,)))
    others = torch.cat([centres[:i], centres[i + 1:]])
    other_labels = torch.cat([labels[:i], labels[i + 1:]])
    nb = torch.cdist(centres[i:i + 1], others).topk(10, largest=False).indices
    x = centres[i:i + 1].clone().requires_grad_()
    if (other_labels[nb] == labels[i]).any():
        (grad,) = torch.autograd.grad(naive_loss(x, labels[i:i + 1], others, other_labels, nb,
                                                 torch.zeros(len(others), dtype=torch.float64), 0.5), x)
        torch.testing.assert_close(steps.steps[i], -grad[0])
