"""The fused Triton loss against the float64 references, run on the CPU by Triton's
interpreter (TRITON_INTERPRET=1), as CI has no GPU."""

import math

import pytest
import torch

from nngk_lab.kernel import fused_loss
from nngk_lab.kernel import nngk_loss
from nngk_lab.training import loop as training
from nngk_lab.kernel.fused_loss import MAX_NEIGHBOURS, fused_kernel_nll, fused_loss_usable
from nngk_lab.kernel.loss import class_log_probs, kernel_nll, neighbour_logits
from nngk_lab.training.config import make_config
from test_loss import EPS, _reference, random_problem, reference_nll, rounding_tolerance
from test_loss_paths import reference_logits
from tiny_runs import TINY, write_tree


@pytest.fixture(autouse=True)
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _fused(p, **kw):
    return fused_kernel_nll(p["features"], p["targets"], p["centres"], p["centre_labels"], p["neighbours"],
                            p["log_weights"], p["sigma"], **kw)


def naive_nll(features, targets, centres, centre_labels, neighbours, log_weights, sigma):
    """Differentiable float64 loss from the explicit-difference logits, one query at a time."""
    terms = []
    for logits, y, nb in zip(reference_logits(features, centres, neighbours, log_weights, sigma),
                             targets.tolist(), neighbours):
        same = centre_labels[nb] == y
        if same.any():
            terms.append(torch.logsumexp(logits, 0) - torch.logsumexp(logits[same], 0))
    return torch.stack(terms).mean() if terms else (features.sum() + log_weights.sum()) * 0.0


@pytest.mark.parametrize("dim", [5, 150])  # 150: more than one block of dimensions
def test_values_match_the_float64_reference_from_tiny_to_huge_distances(seed, dim):
    for trial in range(3):
        p = random_problem(torch.float32, dim=dim)
        where = f"seed={seed} trial={trial} sigma={p['sigma']:.4g}"
        out = _fused(p)
        ref_loss, ref_present = reference_nll(_reference(p), p["targets"])
        assert torch.equal(out.present, ref_present), where
        assert torch.isfinite(out.loss), where
        tol = rounding_tolerance(p["features"], p["centres"], p["log_weights"], p["sigma"], torch.float32)
        assert abs(out.loss.item() - ref_loss) <= tol.max().item() + 8 * EPS[torch.float32] * abs(ref_loss), where
        logits64 = neighbour_logits(p["features"].double(), p["centres"].double(), p["neighbours"],
                                    p["log_weights"].double(), p["sigma"])
        err = (out.logits.double() - logits64).abs()
        assert torch.all(err <= tol + 8 * EPS[torch.float32] * logits64.abs()), f"{where}: {err.max():.3g}"


@pytest.mark.parametrize("shape", [(9, 30, 5, 4, 8), (6, 80, 150, 3, 37), (1, 10, 3, 2, 9)],
                         ids=["small", "wide", "one-query"])
def test_gradients_match_the_naive_float64_loss(seed, shape):
    batch, num_centres, dim, num_classes, k = shape
    # Moderate distances, so that float32 gradients can be compared closely.
    centres = torch.randn(num_centres, dim, dtype=torch.float64)
    centre_labels = torch.randint(num_classes, (num_centres,))
    neighbours = torch.rand(batch, num_centres).argsort(1)[:, :k]  # rows share centres: weight grads add up
    features = centres[neighbours[:, 0]] + 0.5 * torch.randn(batch, dim, dtype=torch.float64)
    targets = torch.randint(num_classes, (batch,))
    log_weights = 0.5 * torch.randn(num_centres, dtype=torch.float64)
    sigma = float(torch.empty(()).uniform_(0.5, 2.0)) * math.sqrt(dim)

    x64, v64 = features.clone().requires_grad_(True), log_weights.clone().requires_grad_(True)
    naive_nll(x64, targets, centres, centre_labels, neighbours, v64, sigma).backward()
    x32, v32 = features.float().requires_grad_(True), log_weights.float().requires_grad_(True)
    fused_kernel_nll(x32, targets, centres.float(), centre_labels, neighbours, v32, sigma).loss.backward()
    for got, want in ((x32.grad, x64.grad), (v32.grad, v64.grad)):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5 * (1 + want.abs().max().item()),
                                   msg=lambda m: f"seed={seed}: {m}")


def test_agrees_with_kernel_nll_including_absent_classes_and_bf16_features(seed):
    p = random_problem(torch.float32, batch=8, num_classes=5)
    p["centre_labels"] = torch.randint(4, p["centre_labels"].shape)  # class 4 has no centre
    p["targets"] = p["centre_labels"][p["neighbours"][:, 0]]
    p["targets"][[1, 4]] = 4
    results = []
    for loss_fn in (kernel_nll, fused_kernel_nll):
        x = p["features"].clone().requires_grad_(True)
        v = p["log_weights"].clone().requires_grad_(True)
        out = loss_fn(x, p["targets"], p["centres"], p["centre_labels"], p["neighbours"], v, p["sigma"])
        out.loss.backward()
        results.append((out.loss, out.present, x.grad, v.grad))
    (loss, present, gx, gv), (f_loss, f_present, f_gx, f_gv) = results
    assert torch.equal(f_present, present) and not present[[1, 4]].any()
    assert (f_gx[[1, 4]] == 0).all()
    # Both losses round in float32, the fused one its distances from ||x||^2 + ||c||^2 - 2 x.c:
    # each query's log-probability is within tol of the exact one in either, so the mean
    # loss within twice the present queries' mean tol. A logit error of tol moves each
    # kernel's weight by up to about 2 tol of itself, and the gradient sums weights times
    # (c - x) / sigma^2, averaged over the present queries: far queries (the last row, 60
    # sigma out) get a wide tolerance, near ones a tight one.
    tol = rounding_tolerance(p["features"], p["centres"], p["log_weights"], p["sigma"], torch.float32)
    torch.testing.assert_close(f_loss, loss, rtol=1e-5, atol=1e-5 + 2 * tol[present].mean().item())
    spread = (p["features"].double().unsqueeze(1) - p["centres"].double()[p["neighbours"]]).norm(dim=2).amax(1)
    n = int(present.sum())
    row_tol = 4 * tol.squeeze(1) * spread / p["sigma"] ** 2 / n
    err = (f_gx - gx).double().abs()
    assert torch.all(err <= row_tol.unsqueeze(1) + 1e-4 * (1 + gx.abs().max().item())), \
        f"{err.amax(1)} > {row_tol}"
    torch.testing.assert_close(f_gv, gv, rtol=1e-4, atol=1e-5 + 4 * tol.max().item() / n)

    x = p["features"].bfloat16().requires_grad_(True)
    out = fused_kernel_nll(x, p["targets"], p["centres"], p["centre_labels"], p["neighbours"], p["log_weights"],
                           p["sigma"])
    out.loss.backward()
    assert out.logits.dtype == torch.float32 and x.grad.dtype == torch.bfloat16


def test_all_samples_absent_gives_zero_loss_and_zero_gradients(seed):
    p = random_problem(torch.float32, num_classes=5)
    p["centre_labels"] = torch.randint(4, p["centre_labels"].shape)
    p["targets"] = torch.full_like(p["targets"], 4)
    x = p["features"].requires_grad_(True)
    v = p["log_weights"].requires_grad_(True)
    out = _fused(p)
    assert not out.present.any() and out.loss.item() == 0.0
    out.loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x)) and torch.equal(v.grad, torch.zeros_like(v))


def test_bad_inputs_raise():
    p = random_problem(torch.float32)
    with pytest.raises(ValueError, match="sigma"):
        _fused(dict(p, sigma=0.0))
    with pytest.raises(ValueError, match="same D"):
        _fused(dict(p, features=p["features"][:, :2]))
    too_many = torch.zeros(p["features"].shape[0], MAX_NEIGHBOURS + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="at most"):
        _fused(dict(p, neighbours=too_many))


def test_usable_only_on_a_gpu_or_under_the_interpreter(monkeypatch):
    assert fused_loss_usable("cpu")  # the interpreter; also runs the self-check against kernel_nll
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not fused_loss_usable("cpu")
    assert not fused_loss_usable("meta")


def test_a_failing_self_check_warns_and_falls_back(monkeypatch):
    monkeypatch.setattr(fused_loss, "_agrees_with_plain_loss", lambda device: False)
    fused_loss._usable.cache_clear()
    try:
        with pytest.warns(UserWarning, match="disagrees"):
            assert not fused_loss_usable("cpu")
    finally:
        fused_loss._usable.cache_clear()


def test_training_with_the_fused_loss_follows_the_plain_loss(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(nngk_loss, "fused_kernel_nll", lambda *a: calls.append(1) or fused_kernel_nll(*a))
    data = write_tree(tmp_path / "data", num_classes=4, per_class=10)
    histories = []
    for fused in (False, True):
        config = make_config(**TINY, data_dir=str(data), save_dir=str(tmp_path / f"run_{fused}"), max_epochs=2,
                             fused_loss=fused)
        histories.append(training.train(config).history)
        assert bool(calls) == fused
    for plain, fused in zip(*histories):
        assert fused["loss"] == pytest.approx(plain["loss"], rel=1e-4)
        assert fused["train_accuracy"] == pytest.approx(plain["train_accuracy"], abs=1e-9)


@pytest.mark.parametrize("k", [8, 70])  # 70: more than one block of neighbours in the class sums
def test_predictions_are_the_kernel_classifiers_argmax(seed, k):
    for trial in range(3):
        p = random_problem(torch.float32, batch=16, num_centres=100, num_classes=6, k=k)
        out = _fused(p)
        log_probs = class_log_probs(out.logits, p["centre_labels"][p["neighbours"]], p["num_classes"])
        top2 = log_probs.topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) > 1e-4  # not a near-tie, where rounding may pick either
        assert clear.sum() > 0
        assert torch.equal(out.predictions[clear], log_probs.argmax(1)[clear]), f"seed={seed} trial={trial}"


def test_an_exact_tie_predicts_the_smallest_label():
    centres = torch.eye(3)                          # all at distance 1 from the origin
    features = torch.zeros(1, 3)
    centre_labels = torch.tensor([3, 1, 1])         # class 1 has two kernels, class 3 one
    log_weights = torch.tensor([math.log(2.0), 0.0, 0.0])  # 2 = 1 + 1: an exact tie
    out = fused_kernel_nll(features, torch.tensor([3]), centres, centre_labels, torch.tensor([[0, 1, 2]]),
                           log_weights, 1.0)
    assert out.predictions.tolist() == [1]
