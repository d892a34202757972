"""The training loss as two fused Triton kernels, for the GPU.

:func:`nngk_lab.kernel.loss.kernel_nll` in plain PyTorch launches a few dozen small kernels per
step. On an H200 at batch 32 that took 2.7 ms, 26% of a ResNet18 step, nearly all of it
launch overhead (``python3 -m bench.gpu_check``, docs/performance.md). Here the forward
pass (gather each query's K centres, distances, logits, both log-sum-exps) is one kernel
with one program per query, and the backward pass (the features' gradient, and the kernel
log-weights' by atomic adds) is another. The results are :func:`kernel_nll`'s up to
float32 rounding; the tests compare the two.

Triton compiles for NVIDIA GPUs. With ``TRITON_INTERPRET=1`` set it runs the same kernels
on the CPU, slowly, which is how the test suite (and CI, without a GPU) checks them.
Training uses this loss when :func:`fused_loss_usable` says it works on its device.
"""

from __future__ import annotations

import functools
import math
import os
import warnings

import torch

from ..errors import first_line
from .loss import KernelLoss, check_loss_inputs, kernel_nll

# A program keeps one query's K logits in registers; beyond this, use kernel_nll.
MAX_NEIGHBOURS = 4096
# Elements of the (K, D) tile of gathered centres a program holds at once.
TILE_ELEMENTS = 8192


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _kernels(interpret: bool):
    """Triton is imported and the kernels defined at first use: importing Triton is slow,
    and it reads TRITON_INTERPRET when a kernel is defined (hence the cache key)."""
    import triton
    import triton.language as tl

    @triton.jit
    def forward(features, centres, sq_norms, log_weights, centre_labels, neighbours, targets,
                logits_out, nll_out, lse_all_out, lse_true_out, predictions_out, K, D, scale,
                BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_J: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        ks = tl.arange(0, BLOCK_K)
        in_k = ks < K
        idx = tl.load(neighbours + row * K + ks, mask=in_k, other=0)
        dots = tl.zeros((BLOCK_K,), dtype=tl.float32)
        x_sq = tl.zeros((BLOCK_D,), dtype=tl.float32)
        for start in range(0, D, BLOCK_D):
            ds = start + tl.arange(0, BLOCK_D)
            in_d = ds < D
            x = tl.load(features + row * D + ds, mask=in_d, other=0.0).to(tl.float32)
            c = tl.load(centres + idx[:, None] * D + ds[None, :], mask=in_k[:, None] & in_d[None, :],
                        other=0.0).to(tl.float32)
            dots += tl.sum(c * x[None, :], axis=1)
            x_sq += x * x
        # ||x - c||^2 = ||x||^2 + ||c||^2 - 2 x.c, clamped at 0 like kernel_nll's.
        sq_dists = tl.maximum(tl.sum(x_sq, axis=0) + tl.load(sq_norms + idx, mask=in_k, other=0.0) - 2.0 * dots,
                              0.0)
        logit = tl.load(log_weights + idx, mask=in_k, other=0.0) - sq_dists * scale
        logit = tl.where(in_k, logit, float("-inf"))
        tl.store(logits_out + row * K + ks, logit, mask=in_k)

        labels = tl.load(centre_labels + idx, mask=in_k, other=-1)
        same = in_k & (labels == tl.load(targets + row))
        top = tl.max(logit, axis=0)
        lse_all = top + tl.log(tl.sum(tl.exp(logit - top), axis=0))
        true_logit = tl.where(same, logit, float("-inf"))
        true_top = tl.max(true_logit, axis=0)
        present = true_top > float("-inf")
        # Absent true class: no log(0) is taken (the interpreter would warn), the result is -inf.
        true_sum = tl.sum(tl.exp(true_logit - tl.where(present, true_top, 0.0)), axis=0)
        lse_true = tl.where(present, true_top + tl.log(tl.where(present, true_sum, 1.0)), float("-inf"))
        tl.store(nll_out + row, tl.where(present, lse_all - lse_true, 0.0))
        tl.store(lse_all_out + row, lse_all)
        tl.store(lse_true_out + row, lse_true)

        # The kernel classifier's prediction, for the running accuracy: the label whose
        # kernels sum highest (the smallest such label on a tie, as argmax takes it). Each
        # neighbour's class sum adds the kernels of every neighbour with its label, BLOCK_J
        # of them at a time, read back from logits_out (the barrier makes them visible).
        tl.debug_barrier()
        class_sums = tl.zeros((BLOCK_K,), dtype=tl.float32)
        for start in range(0, K, BLOCK_J):
            js = start + tl.arange(0, BLOCK_J)
            in_j = js < K
            labels_j = tl.load(centre_labels + tl.load(neighbours + row * K + js, mask=in_j, other=0),
                               mask=in_j, other=-2)
            kernels_j = tl.exp(tl.load(logits_out + row * K + js, mask=in_j, other=float("-inf")) - top)
            class_sums += tl.sum(tl.where(labels[:, None] == labels_j[None, :], kernels_j[None, :], 0.0), axis=1)
        class_sums = tl.where(in_k, class_sums, -1.0)
        best = class_sums == tl.max(class_sums, axis=0)
        tl.store(predictions_out + row, tl.min(tl.where(best, labels, tl.max(labels, axis=0)), axis=0))

    @triton.jit
    def backward(features, centres, centre_labels, neighbours, targets, logits, lse_all, lse_true, grad_nll,
                 grad_features, grad_log_weights, K, D, scale,
                 BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        ks = tl.arange(0, BLOCK_K)
        in_k = ks < K
        idx = tl.load(neighbours + row * K + ks, mask=in_k, other=0)
        logit = tl.load(logits + row * K + ks, mask=in_k, other=float("-inf"))
        same = in_k & (tl.load(centre_labels + idx, mask=in_k, other=-1) == tl.load(targets + row))
        row_lse_true = tl.load(lse_true + row)
        present = row_lse_true > float("-inf")
        # nll = lse_all - lse_true, so d nll / d logit_j = softmax_all_j - softmax_true_j.
        p_all = tl.exp(logit - tl.load(lse_all + row))
        p_true = tl.exp(tl.where(same, logit - tl.where(present, row_lse_true, 0.0), float("-inf")))
        grad = tl.where(present, tl.load(grad_nll + row), 0.0)
        d_logit = tl.where(in_k, grad * (p_all - p_true), 0.0)
        # Several queries may share a centre: their log-weight gradients add up (in no fixed
        # order on a GPU, so runs there are not bit-reproducible; they are not anyway).
        tl.atomic_add(grad_log_weights + idx, d_logit, mask=in_k)
        d_total = tl.sum(d_logit, axis=0)
        # d logit_j / d x = (c_j - x) / sigma^2 = 2 * scale * (c_j - x). The forward pass's clamp
        # at 0 only acts when x sits on c_j, where this is (within rounding) 0 as well.
        for start in range(0, D, BLOCK_D):
            ds = start + tl.arange(0, BLOCK_D)
            in_d = ds < D
            x = tl.load(features + row * D + ds, mask=in_d, other=0.0).to(tl.float32)
            c = tl.load(centres + idx[:, None] * D + ds[None, :], mask=in_k[:, None] & in_d[None, :],
                        other=0.0).to(tl.float32)
            grad_x = (tl.sum(d_logit[:, None] * c, axis=0) - d_total * x) * (2.0 * scale)
            tl.store(grad_features + row * D + ds, grad_x, mask=in_d)

    return forward, backward


def _launch_settings(k: int, dim: int) -> dict:
    block_k = 1 << max(k - 1, 0).bit_length()
    block_d = max(16, min(128, TILE_ELEMENTS // block_k, 1 << max(dim - 1, 0).bit_length()))
    return dict(BLOCK_K=block_k, BLOCK_D=block_d, num_warps=4 if block_k <= 256 else 8)


def _forward_settings(k: int, dim: int) -> dict:
    settings = _launch_settings(k, dim)
    return {**settings, "BLOCK_J": max(1, min(settings["BLOCK_K"], TILE_ELEMENTS // settings["BLOCK_K"]))}


class _FusedNLL(torch.autograd.Function):
    """Per-query ``-log p(y | x)`` (0 where the true class is absent), the (B, K) logits and
    the true-class log-sum-exps; gradients reach the features and the log-weights."""

    @staticmethod
    def forward(ctx, features, log_weights, centres, sq_norms, centre_labels, neighbours, targets, scale):
        forward_kernel, _ = _kernels(interpreting())
        batch, dim = features.shape
        k = neighbours.shape[1]
        logits = torch.empty((batch, k), dtype=torch.float32, device=features.device)
        nll, lse_all, lse_true = (torch.empty(batch, dtype=torch.float32, device=features.device) for _ in range(3))
        predictions = torch.empty(batch, dtype=centre_labels.dtype, device=features.device)
        forward_kernel[(batch,)](features, centres, sq_norms, log_weights, centre_labels, neighbours, targets,
                                 logits, nll, lse_all, lse_true, predictions, k, dim, scale,
                                 **_forward_settings(k, dim))
        ctx.save_for_backward(features, centres, centre_labels, neighbours, targets, logits, lse_all, lse_true)
        ctx.scale, ctx.num_centres = scale, log_weights.shape[0]
        ctx.mark_non_differentiable(logits, lse_true, predictions)
        return nll, logits, lse_true, predictions

    @staticmethod
    def backward(ctx, grad_nll, _grad_logits, _grad_lse_true, _grad_predictions):
        _, backward_kernel = _kernels(interpreting())
        features, centres, centre_labels, neighbours, targets, logits, lse_all, lse_true = ctx.saved_tensors
        batch, dim = features.shape
        k = neighbours.shape[1]
        grad_features = torch.empty((batch, dim), dtype=torch.float32, device=features.device)
        grad_log_weights = torch.zeros(ctx.num_centres, dtype=torch.float32, device=features.device)
        backward_kernel[(batch,)](features, centres, centre_labels, neighbours, targets, logits, lse_all, lse_true,
                                  grad_nll.contiguous(), grad_features, grad_log_weights, k, dim, ctx.scale,
                                  **_launch_settings(k, dim))
        return grad_features.to(features.dtype), grad_log_weights, None, None, None, None, None, None


def fused_kernel_nll(features: torch.Tensor, targets: torch.Tensor, centres: torch.Tensor,
                     centre_labels: torch.Tensor, neighbours: torch.Tensor, log_weights: torch.Tensor,
                     sigma: float, centre_sq_norms: torch.Tensor | None = None) -> KernelLoss:
    """:func:`nngk_lab.kernel.loss.kernel_nll` (same arguments, same result up to float32
    rounding) in two Triton kernels, with the kernel classifier's predictions too
    (``KernelLoss.predictions``). Runs on a CUDA device, or on the CPU when
    :func:`interpreting`. At most :data:`MAX_NEIGHBOURS` neighbours per query."""
    check_loss_inputs(features, centres, neighbours, sigma)
    if neighbours.shape[1] > MAX_NEIGHBOURS:
        raise ValueError(f"the fused loss takes at most {MAX_NEIGHBOURS} neighbours per query, got "
                         f"{neighbours.shape[1]}; use nngk_lab.kernel.loss.kernel_nll")
    centres = centres.detach().float().contiguous()
    sq_norms = centres.square().sum(1) if centre_sq_norms is None else centre_sq_norms.detach().float().contiguous()
    nll, logits, lse_true, predictions = _FusedNLL.apply(
        features.contiguous(), log_weights, centres, sq_norms, centre_labels.contiguous(),
        neighbours.contiguous(), targets.contiguous(), 1.0 / (2.0 * sigma * sigma))
    present = lse_true > -math.inf
    return KernelLoss(nll.sum() / present.sum().clamp_min(1), logits, present, predictions)


def _agrees_with_plain_loss(device: torch.device) -> bool:
    """Loss and gradients of both versions on a small random problem, some queries with
    their true class absent."""
    g = torch.Generator().manual_seed(0)
    batch, num_centres, k, dim, classes = 12, 96, 20, 40, 6
    features = torch.randn(batch, dim, generator=g)
    centres = torch.randn(num_centres, dim, generator=g)
    centre_labels = torch.randint(classes, (num_centres,), generator=g)
    neighbours = torch.rand(batch, num_centres, generator=g).argsort(1)[:, :k]
    targets = torch.randint(classes, (batch,), generator=g)
    log_weights = 0.1 * torch.randn(num_centres, generator=g)
    results = []
    for loss_fn in (kernel_nll, fused_kernel_nll):
        x = features.to(device).requires_grad_(True)
        v = log_weights.to(device).requires_grad_(True)
        out = loss_fn(x, targets.to(device), centres.to(device), centre_labels.to(device), neighbours.to(device),
                      v, 1.5)
        out.loss.backward()
        results.append([t.detach().cpu() for t in (out.loss, out.logits, out.present, x.grad, v.grad)])
    return all(torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5) for a, b in zip(*results))


@functools.lru_cache(maxsize=None)
def _usable(device: torch.device, interpret: bool) -> bool:
    if device.type != "cuda" and not (device.type == "cpu" and interpret):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    try:
        agrees = _agrees_with_plain_loss(device)
    except Exception as e:  # Triton's compile and driver errors have many types; any means "do not use it"
        warnings.warn(f"the fused Triton loss does not run on {device} ({first_line(e)}); "
                      "training uses the plain PyTorch loss", stacklevel=3)
        return False
    if not agrees:
        warnings.warn(f"the fused Triton loss disagrees with the plain PyTorch loss on {device}; "
                      "training uses the plain PyTorch loss", stacklevel=3)
    return agrees


def fused_loss_usable(device: torch.device | str) -> bool:
    """Whether :func:`fused_kernel_nll` can train on ``device``: Triton is installed, the
    device is a GPU (or the CPU while :func:`interpreting`), and on a small random problem
    it gives the plain loss's values and gradients. Checked once per device; a failure
    warns and returns False."""
    return _usable(torch.device(device), interpreting())
