"""neighbour_logits has two ways to the dot products x.c (one (B, N) matrix product when
N is small next to K, a (B, K, D) gather otherwise): both must give the reference's
values and gradients."""

import pytest
import torch

from nngk_lab.kernel import loss


def reference_logits(features, centres, neighbours, log_weights, sigma):
    """Explicit differences, one query at a time, in float64."""
    rows = [log_weights[nb] - (x - centres[nb]).square().sum(1) / (2 * sigma**2)
            for x, nb in zip(features, neighbours)]
    return torch.stack(rows)


@pytest.mark.parametrize("path_ratio", [0, 10**9], ids=["gather", "dense"])
@pytest.mark.parametrize("given_norms", [False, True])
def test_both_paths_match_the_reference_and_its_gradients(monkeypatch, seed, path_ratio, given_norms):
    monkeypatch.setattr(loss, "DENSE_DOT_MAX_CENTRES_PER_NEIGHBOUR", path_ratio)
    batch, n, dim, k = (int(torch.randint(lo, hi, ())) for lo, hi in [(1, 9), (10, 60), (1, 12), (1, 10)])
    scale = float(10 ** torch.empty(()).uniform_(-2, 2))
    centres = scale * torch.randn(n, dim, dtype=torch.float64)
    features = (scale * torch.randn(batch, dim, dtype=torch.float64)).requires_grad_(True)
    log_weights = torch.randn(n, dtype=torch.float64).requires_grad_(True)
    neighbours = torch.rand(batch, n).argsort(1)[:, :k]
    sigma = scale * float(torch.empty(()).uniform_(0.5, 2.0))
    norms = centres.square().sum(1) if given_norms else None

    got = loss.neighbour_logits(features, centres, neighbours, log_weights, sigma, norms)
    want = reference_logits(features, centres, neighbours, log_weights, sigma)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9 * (1 + want.abs().max().item()))
    weights = torch.randn_like(want)
    got_grads = torch.autograd.grad((got * weights).sum(), (features, log_weights))
    want_grads = torch.autograd.grad((want * weights).sum(), (features, log_weights))
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-7 * (1 + w.abs().max().item()))


def test_the_path_follows_the_bank_size(monkeypatch):
    """Small N next to K takes the matrix product, large N the gather (spied on bmm)."""
    calls = []
    real_bmm = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda *a, **kw: calls.append(1) or real_bmm(*a, **kw))
    k = 5
    for n, expect_gather in [(loss.DENSE_DOT_MAX_CENTRES_PER_NEIGHBOUR * k, False),
                             (loss.DENSE_DOT_MAX_CENTRES_PER_NEIGHBOUR * k + 1, True)]:
        calls.clear()
        centres, x = torch.randn(n, 3), torch.randn(2, 3)
        loss.neighbour_logits(x, centres, torch.randint(n, (2, k)), torch.zeros(n), 1.0)
        assert bool(calls) == expect_gather, n
