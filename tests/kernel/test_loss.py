"""nngk_lab.kernel.loss against a naive per-sample float64 reference written from DESIGN.md:

    k_i(x)   = w_i * exp(-||x - c_i||^2 / (2 sigma^2))
    p(c | x) = sum_{i in N_K(x), y_i = c} k_i(x) / sum_{i in N_K(x)} k_i(x)

Inputs are drawn fresh on every run (see the ``seed`` fixture in conftest.py).
"""

import math

import pytest
import torch

from nngk_lab.kernel.search import nearest_neighbours
from nngk_lab.kernel.loss import (KernelWeights, class_log_probs, kernel_log_probs, kernel_nll, neighbour_logits,
    true_class_log_prob)

EPS = {torch.float32: torch.finfo(torch.float32).eps, torch.float64: torch.finfo(torch.float64).eps}


def _logsumexp(values):
    if not values:
        return -math.inf
    m = max(values)
    return m + math.log(math.fsum(math.exp(v - m) for v in values))


def reference_log_probs(features, centres, centre_labels, neighbours, log_weights, sigma, num_classes):
    """log p(c | x) for every query and class, one sample and one class at a time, in float64."""
    x, c = features.double().tolist(), centres.double().tolist()
    labels, nbrs, v = centre_labels.tolist(), neighbours.tolist(), log_weights.double().tolist()
    rows = []
    for b in range(len(x)):
        log_k = []  # (log k_i, y_i) for each neighbour i
        for i in nbrs[b]:
            sq_dist = math.fsum((xj - cj) ** 2 for xj, cj in zip(x[b], c[i]))
            log_k.append((v[i] - sq_dist / (2.0 * sigma * sigma), labels[i]))
        total = _logsumexp([lk for lk, _ in log_k])
        row = []
        for cls in range(num_classes):
            in_class = [lk for lk, y in log_k if y == cls]
            row.append(_logsumexp(in_class) - total if in_class else -math.inf)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def reference_nll(ref_log_probs, targets):
    """Mean -log p(y | x) over the samples whose class is present, and which are present."""
    picked = [ref_log_probs[b, t].item() for b, t in enumerate(targets.tolist())]
    present = [math.isfinite(p) for p in picked]
    kept = [-p for p, ok in zip(picked, present) if ok]
    return (math.fsum(kept) / len(kept) if kept else 0.0), torch.tensor(present)


def rounding_tolerance(features, centres, log_weights, sigma, dtype):
    """Per-query absolute tolerance (B, 1) for log-probabilities computed in ``dtype``.

    ``||x - c||^2`` is formed as ``||x||^2 + ||c||^2 - 2 x.c``, whose rounding error is a
    few eps times ``||x||^2 + ||c||^2`` (times the dimension for the sums), then divided
    by ``2 sigma^2``; the log-sum-exps add a few eps of the logits' size (>= 1).
    """
    dim = features.shape[1]
    scale = features.double().square().sum(1) + centres.double().square().sum(1).max()
    logit_size = 1 + log_weights.double().abs().max()
    return (4 * dim * EPS[dtype] * scale / (2 * sigma * sigma) + 16 * EPS[dtype] * logit_size).unsqueeze(1)


def random_problem(dtype, batch=9, num_centres=30, dim=5, num_classes=4, k=8):
    """Random queries whose distances to their neighbours range from zero (a query sitting
    exactly on a centre) through tiny to huge (last row: every kernel underflows float32)."""
    sigma = 10 ** float(torch.empty(()).uniform_(-1.3, 0.7))
    centres = torch.randn(num_centres, dim, dtype=torch.float64) * 10 ** float(torch.empty(()).uniform_(-1, 1))
    centre_labels = torch.randint(num_classes, (num_centres,))
    neighbours = torch.stack([torch.randperm(num_centres)[:k] for _ in range(batch)])
    log_weights = torch.randn(num_centres, dtype=torch.float64) * 2
    # Each query starts at one of its neighbours, offset by sigma * 10^[-7, 1.5].
    anchor = centres[neighbours[:, 0]]
    offset = sigma * 10 ** torch.empty(batch, 1, dtype=torch.float64).uniform_(-7, 1.5)
    features = anchor + offset * torch.nn.functional.normalize(torch.randn(batch, dim, dtype=torch.float64), dim=1)
    features[0] = anchor[0]
    # At least 60 sigma from every centre: d / (2 sigma^2) >= 1800 for all neighbours.
    direction = torch.nn.functional.normalize(torch.randn(dim, dtype=torch.float64), dim=0)
    features[-1] = direction * (centres.norm(dim=1).max() + 60 * sigma)
    pick = torch.randint(k, (batch,))
    targets = centre_labels[neighbours[torch.arange(batch), pick]]
    return dict(features=features.to(dtype), centres=centres.to(dtype), centre_labels=centre_labels,
                neighbours=neighbours, log_weights=log_weights.to(dtype), sigma=sigma,
                num_classes=num_classes, targets=targets)


def _log_probs(p):
    return kernel_log_probs(p["features"], p["centres"], p["centre_labels"], p["neighbours"],
                            p["log_weights"], p["sigma"], p["num_classes"])


def _nll(p, **kw):
    return kernel_nll(p["features"], p["targets"], p["centres"], p["centre_labels"], p["neighbours"],
                      p["log_weights"], p["sigma"], **kw)


def _reference(p):
    return reference_log_probs(p["features"], p["centres"], p["centre_labels"], p["neighbours"],
                               p["log_weights"], p["sigma"], p["num_classes"])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernel_log_probs_matches_reference_from_tiny_to_huge_distances(dtype, seed):
    for trial in range(6):
        p = random_problem(dtype)
        got = _log_probs(p)
        ref = _reference(p)
        where = f"seed={seed} trial={trial} dtype={dtype} sigma={p['sigma']:.4g}"
        assert got.dtype == dtype
        # The far row really is in the regime where float32 kernels all underflow.
        far_logits = neighbour_logits(p["features"][-1:], p["centres"], p["neighbours"][-1:],
                                      p["log_weights"], p["sigma"])
        assert torch.all(torch.exp(far_logits.float()) == 0), where
        assert torch.equal(torch.isneginf(got), torch.isneginf(ref)), where
        present = torch.isfinite(ref)
        assert torch.isfinite(got[present]).all(), where
        tol = rounding_tolerance(p["features"], p["centres"], p["log_weights"], p["sigma"], dtype)
        tol = tol + 8 * EPS[dtype] * ref.abs().nan_to_num(posinf=0, neginf=0)
        err = (got.double() - ref).abs().where(present, 0.0)
        assert torch.all(err <= tol), f"{where}: max error {err.max():.3g}, worst excess {(err - tol).max():.3g}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernel_nll_matches_reference(dtype, seed):
    for trial in range(6):
        p = random_problem(dtype)
        ref = _reference(p)
        ref_loss, ref_present = reference_nll(ref, p["targets"])
        out = _nll(p)
        where = f"seed={seed} trial={trial} dtype={dtype} sigma={p['sigma']:.4g}"
        assert torch.equal(out.present, ref_present), where
        assert torch.isfinite(out.loss), where
        tol = rounding_tolerance(p["features"], p["centres"], p["log_weights"], p["sigma"], dtype).max().item()
        assert abs(out.loss.item() - ref_loss) <= tol + 8 * EPS[dtype] * abs(ref_loss), where
        expected_logits = neighbour_logits(p["features"], p["centres"], p["neighbours"], p["log_weights"],
                                           p["sigma"])
        assert torch.equal(out.logits, expected_logits), where


def test_kernel_nll_is_minus_log_prob_of_the_target(seed):
    p = random_problem(torch.float64)
    log_probs = _log_probs(p)
    for b in range(p["features"].shape[0]):
        row = dict(p, features=p["features"][b:b + 1], targets=p["targets"][b:b + 1],
                   neighbours=p["neighbours"][b:b + 1])
        loss = _nll(row).loss
        assert loss.item() == pytest.approx(-log_probs[b, p["targets"][b]].item(), rel=1e-12, abs=1e-12), \
            f"seed={seed} row={b}"
    batch_loss = _nll(p).loss
    expected = -log_probs.gather(1, p["targets"].unsqueeze(1)).mean()
    assert batch_loss.item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-12), f"seed={seed}"


def test_centre_sq_norms_shortcut_gives_the_same_values(seed):
    p = random_problem(torch.float64)
    plain = _nll(p)
    shortcut = _nll(p, centre_sq_norms=p["centres"].square().sum(1))
    torch.testing.assert_close(shortcut.logits, plain.logits, rtol=1e-12, atol=1e-9, msg=f"seed={seed}")
    torch.testing.assert_close(shortcut.loss, plain.loss, rtol=1e-12, atol=1e-9, msg=f"seed={seed}")


def _gradcheck_problem():
    """Moderate distances (so gradients are not vanishingly small), float64, and one class
    (the last) that no centre has: the first query's target, so it is absent."""
    num_classes = 4
    p = dict(features=torch.randn(4, 3, dtype=torch.float64, requires_grad=True),
             centres=torch.randn(10, 3, dtype=torch.float64),
             centre_labels=torch.randint(num_classes - 1, (10,)),
             neighbours=torch.stack([torch.randperm(10)[:5] for _ in range(4)]),
             log_weights=(torch.randn(10, dtype=torch.float64) * 0.5).requires_grad_(),
             sigma=float(torch.empty(()).uniform_(0.7, 2.0)), num_classes=num_classes)
    p["targets"] = p["centre_labels"][p["neighbours"][:, 0]]
    p["targets"][0] = num_classes - 1
    return p


def test_gradcheck_neighbour_logits(seed):
    p = _gradcheck_problem()
    assert torch.autograd.gradcheck(
        lambda f, v: neighbour_logits(f, p["centres"], p["neighbours"], v, p["sigma"]),
        (p["features"], p["log_weights"])), f"seed={seed}"


def test_gradcheck_kernel_log_probs(seed):
    p = _gradcheck_problem()
    finite = torch.isfinite(_log_probs(p)).detach()
    assert not finite.all()  # absent classes are there, and must not disturb the gradient

    def present_log_probs(f, v):
        return _log_probs(dict(p, features=f, log_weights=v))[finite]

    assert torch.autograd.gradcheck(present_log_probs, (p["features"], p["log_weights"])), f"seed={seed}"


def test_gradcheck_kernel_nll(seed):
    p = _gradcheck_problem()
    assert not _nll(p).present[0]
    assert torch.autograd.gradcheck(lambda f, v: _nll(dict(p, features=f, log_weights=v)).loss,
                                    (p["features"], p["log_weights"])), f"seed={seed}"


def reference_nca_loss(points, labels, scale):
    """NCA (Goldberger et al. 2004), log form: -mean_i log sum_{j != i, y_j = y_i} p_ij with
    p_ij = exp(-scale d_ij) / sum_{k != i} exp(-scale d_ik), computed directly."""
    x, y = points.tolist(), labels.tolist()
    n = len(x)
    total = 0.0
    for i in range(n):
        kernel = [math.exp(-scale * math.fsum((a - b) ** 2 for a, b in zip(x[i], x[j]))) if j != i else 0.0
                  for j in range(n)]
        same = math.fsum(kernel[j] for j in range(n) if y[j] == y[i] and j != i)
        total += -math.log(same / math.fsum(kernel))
    return total / n


def test_kernel_nll_with_all_neighbours_and_unit_weights_is_nca(seed):
    for trial in range(3):
        n = int(torch.randint(8, 20, ()))
        points = torch.randn(n, 3, dtype=torch.float64)
        labels = torch.randint(3, (n,))
        labels[:6] = torch.tensor([0, 0, 1, 1, 2, 2])  # every class has a same-class neighbour
        sigma = float(torch.empty(()).uniform_(0.7, 3.0))
        _, neighbours = nearest_neighbours(points, points, k=n - 1, exclude_self=True)
        out = kernel_nll(points, labels, points, labels, neighbours, torch.zeros(n, dtype=torch.float64), sigma)
        assert out.present.all()
        expected = reference_nca_loss(points, labels, 1.0 / (2 * sigma * sigma))
        assert out.loss.item() == pytest.approx(expected, rel=1e-10), f"seed={seed} trial={trial}"


def test_absent_true_class_is_left_out_with_finite_loss_and_gradient(seed):
    p = random_problem(torch.float64, batch=6, num_classes=5)
    p["centre_labels"] = torch.randint(4, p["centre_labels"].shape)  # class 4 has no centre
    p["targets"] = p["centre_labels"][p["neighbours"][:, 0]]
    absent = torch.tensor([False, True, False, True, False, False])
    p["targets"][absent] = 4
    p["features"].requires_grad_(True)
    p["log_weights"].requires_grad_(True)

    log_probs = _log_probs(p)
    assert torch.isneginf(log_probs[:, 4]).all()
    assert torch.equal(torch.isneginf(log_probs), torch.isneginf(_reference(p))), f"seed={seed}"

    out = _nll(p)
    assert torch.equal(out.present, ~absent)
    ref_loss, _ = reference_nll(_reference(p), p["targets"])
    assert torch.isfinite(out.loss)
    assert out.loss.item() == pytest.approx(ref_loss, rel=1e-9, abs=1e-9), f"seed={seed}"
    out.loss.backward()
    assert torch.isfinite(p["features"].grad).all() and torch.isfinite(p["log_weights"].grad).all()
    assert (p["features"].grad[absent] == 0).all()


def test_all_samples_absent_gives_zero_loss_and_zero_gradients(seed):
    p = random_problem(torch.float64, num_classes=5)
    p["centre_labels"] = torch.randint(4, p["centre_labels"].shape)
    p["targets"] = torch.full_like(p["targets"], 4)
    p["features"].requires_grad_(True)
    p["log_weights"].requires_grad_(True)
    out = _nll(p)
    assert not out.present.any()
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert torch.equal(p["features"].grad, torch.zeros_like(p["features"]))
    assert torch.equal(p["log_weights"].grad, torch.zeros_like(p["log_weights"]))


@pytest.mark.parametrize("with_sq_norms", [False, True])
def test_centres_get_no_gradient(with_sq_norms, seed):
    p = random_problem(torch.float64)
    p["centres"].requires_grad_(True)
    p["features"].requires_grad_(True)
    kw = {"centre_sq_norms": p["centres"].square().sum(1)} if with_sq_norms else {}
    _nll(p, **kw).loss.backward()
    assert p["centres"].grad is None
    assert p["features"].grad is not None and p["features"].grad.abs().sum() > 0
    kernel = _log_probs(p)
    kernel[torch.isfinite(kernel)].sum().backward()
    assert p["centres"].grad is None


def test_kernel_weights_start_at_zero():
    weights = KernelWeights(7)
    assert torch.equal(weights.log_weights.detach(), torch.zeros(7))
    assert torch.equal(weights.weights, torch.ones(7))
    assert weights() is weights.log_weights
    assert [q for q in weights.parameters()] == [weights.log_weights]
    assert weights.log_weights.requires_grad


@pytest.mark.parametrize("sigma", [0, 0.0, -1.0, math.nan, math.inf, -math.inf, "1", None])
def test_bad_sigma_raises(sigma):
    p = random_problem(torch.float64)
    p["sigma"] = sigma
    with pytest.raises(ValueError, match="sigma"):
        neighbour_logits(p["features"], p["centres"], p["neighbours"], p["log_weights"], sigma)
    with pytest.raises(ValueError, match="sigma"):
        _log_probs(p)
    with pytest.raises(ValueError, match="sigma"):
        _nll(p)


def test_a_kernel_of_minus_inf_is_no_neighbour(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([[0, 1, 1, 2, 2], [0, 0, 1, 2, 2], [2, 2, 2, 1, 1]])
    targets = torch.tensor([1, 2, 2])
    masked = logits.clone()
    masked[0, [1, 2]] = -math.inf  # row 0: class 1 (its own) only has masked kernels
    masked[1, 0] = -math.inf       # row 1: one of class 0's two kernels masked
    masked.requires_grad_()
    # the masked kernels must count as absent: the same as leaving them out of the row
    expected = [reference_log_probs_of_row(logits[0, [0, 3, 4]], labels[0, [0, 3, 4]], 3),
                reference_log_probs_of_row(logits[1, 1:], labels[1, 1:], 3),
                reference_log_probs_of_row(logits[2], labels[2], 3)]
    got = class_log_probs(masked, labels, 3)
    for row, exp in zip(got.detach(), expected):
        assert torch.allclose(row, exp, rtol=1e-12, atol=1e-12) and torch.equal(row.isinf(), exp.isinf())
    log_prob, present = true_class_log_prob(masked, labels, targets)
    assert present.tolist() == [False, True, True] and log_prob[0] == -math.inf
    assert torch.allclose(log_prob[1:], got.detach()[[1, 2], [2, 2]])
    (torch.where(torch.isfinite(got), got, 0.0).sum() + torch.where(present, log_prob, 0.0).sum()).backward()
    assert torch.isfinite(masked.grad).all() and (masked.grad[masked.detach().isinf()] == 0).all()


def reference_log_probs_of_row(logits, labels, num_classes):
    """log p(c) of one query from its finite kernels' logits, in float64, one class at a time."""
    total = _logsumexp(logits.tolist())
    return torch.tensor([_logsumexp([v for v, y in zip(logits.tolist(), labels.tolist()) if y == c]) - total
                         if (labels == c).any() else -math.inf for c in range(num_classes)], dtype=torch.float64)
