"""Numerics: the loss and its gradients stay finite for any input, and a run whose loss or
weights do become NaN/inf stops with NonFiniteLossError (one that runs out of memory with
ResourceError), keeping the last good checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from nngk_lab.training import parts as parts_module
from nngk_lab.kernel import nngk_loss as loss_module
from nngk_lab.errors import NonFiniteLossError, ResourceError
from nngk_lab.kernel.loss import kernel_nll
from nngk_lab.train import main
from nngk_lab.training.runs import CHECKPOINT_NAME, load_run
from nngk_lab.training.loop import train

from tiny_tree import make_tree, one_thread, tiny_argv, tiny_config  # noqa: F401


def _naive_log_prob(x, target, centres, labels, neighbours, log_weights, sigma) -> float:
    """log p(target | x) in float64, one neighbour at a time (-inf if the class is absent)."""
    logs = [float(log_weights[i]) - float(((x.double() - centres[i].double()) ** 2).sum()) / (2 * sigma ** 2)
            for i in neighbours.tolist()]
    true = [v for v, i in zip(logs, neighbours.tolist()) if int(labels[i]) == int(target)]
    if not true:
        return -math.inf

    def lse(values):
        top = max(values)
        return top + math.log(sum(math.exp(v - top) for v in values))

    return lse(true) - lse(logs)


def _case(name: str, generator: torch.Generator):
    b, n, d, k, classes = 6, 60, 5, 8, 3
    x = torch.randn(b, d, generator=generator)
    centres = torch.randn(n, d, generator=generator)
    labels = torch.randint(0, classes, (n,), generator=generator)
    targets = torch.randint(0, classes, (b,), generator=generator)
    log_weights = torch.randn(n, generator=generator)
    neighbours = torch.stack([torch.randperm(n, generator=generator)[:k] for _ in range(b)])
    sigma = 1.0
    if name == "huge distances":
        x, centres, sigma = x * 1e3, centres * 1e3, 0.01
    elif name == "tiny distances":
        centres = x.repeat(n // b + 1, 1)[:n] + 1e-7 * torch.randn(n, d, generator=generator)
    elif name == "all neighbours of the true class":
        neighbours = torch.randperm(n, generator=generator)[:b * k].view(b, k)  # no centre shared by two rows
        labels[neighbours] = targets.unsqueeze(1).expand(-1, k)
    elif name == "true class absent":
        labels[:] = (targets[0] + 1) % classes
        targets[:] = targets[0]
    elif name == "extreme kernel weights":
        log_weights = log_weights.sign() * 1e4
    return x, targets, centres, labels, neighbours, log_weights, sigma


CASES = ["huge distances", "tiny distances", "all neighbours of the true class", "true class absent",
         "extreme kernel weights"]


@pytest.mark.parametrize("name", CASES)
def test_loss_and_gradients_are_finite_and_match_a_float64_reference(name):
    generator = torch.Generator().manual_seed(CASES.index(name) + int(torch.randint(1000, ())))
    x, targets, centres, labels, neighbours, log_weights, sigma = _case(name, generator)
    x.requires_grad_(True)
    log_weights.requires_grad_(True)
    out = kernel_nll(x, targets, centres, labels, neighbours, log_weights, sigma)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(x.grad).all() and torch.isfinite(log_weights.grad).all()
    reference = [_naive_log_prob(x[i].detach(), targets[i], centres, labels, neighbours[i],
                                 log_weights.detach(), sigma) for i in range(len(x))]
    present = [math.isfinite(r) for r in reference]
    assert out.present.tolist() == present
    expected = -sum(r for r in reference if math.isfinite(r)) / max(sum(present), 1)
    loss = float(out.loss.detach())
    # float32 logits carry a rounding error proportional to their size
    scale = 1.0 + float(out.logits.detach().abs().max())
    assert loss == pytest.approx(expected, rel=1e-4, abs=1e-5 * scale)
    if name == "all neighbours of the true class":
        assert loss == 0.0
    if name == "true class absent":
        assert loss == 0.0 and not x.grad.any()


def test_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, one_thread):
    tree, save_dir = make_tree(tmp_path / "tree"), tmp_path / "run"
    train(tiny_config(tree, save_dir, max_epochs=1))
    kept = (save_dir / CHECKPOINT_NAME).read_bytes()
    real, calls = loss_module.kernel_nll, {"n": 0}

    def nan_on_second_step(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        return out._replace(loss=out.loss * math.nan) if calls["n"] == 2 else out

    monkeypatch.setattr(loss_module, "kernel_nll", nan_on_second_step)
    with pytest.raises(NonFiniteLossError, match=f"the loss became NaN or infinite in epoch 2.*{save_dir} was kept"):
        train(tiny_config(tree, save_dir, max_epochs=3), resume=True)
    assert (save_dir / CHECKPOINT_NAME).read_bytes() == kept
    run = load_run(save_dir)
    assert all(torch.isfinite(p).all() for p in run.model.state_dict().values())


def test_diverging_run_never_saves_broken_weights(tmp_path, capsys, one_thread):
    tree, save_dir = make_tree(tmp_path / "tree"), tmp_path / "run"
    assert main(tiny_argv(tree, save_dir, "--learning_rate", "1e30", max_epochs=5)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the ") and " became NaN or infinite" in err and err.count("\n") == 1
    run = load_run(save_dir)  # the last good checkpoint
    assert all(torch.isfinite(t).all() for t in [*run.model.state_dict().values(), run.bank.features,
                                                   run.kernel_weights.log_weights])


def test_weights_broken_by_the_last_step_of_an_epoch_are_not_saved(tmp_path, monkeypatch, one_thread):
    real_build, steps = parts_module.build_parts, {"n": 0}

    def build_parts(*args, **kwargs):
        parts = real_build(*args, **kwargs)
        model, optimiser = parts.model, parts.optimiser
        real_step = optimiser.step

        def step(*a, **k):
            real_step(*a, **k)
            steps["n"] += 1
            if steps["n"] == 8:  # the last step of epoch 2: its loss was finite
                with torch.no_grad():
                    first = next(model.parameters())  # channels-last: index it, do not view it
                    first[(0,) * first.dim()] = math.inf

        optimiser.step = step
        return parts

    monkeypatch.setattr(parts_module, "build_parts", build_parts)
    tree, save_dir = make_tree(tmp_path / "tree"), tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="the weights became NaN or infinite in epoch 2"):
        train(tiny_config(tree, save_dir))
    run = load_run(save_dir)  # saved at the bank refresh that began epoch 2
    assert len(run.history) == 1 and all(torch.isfinite(t).all() for t in run.model.state_dict().values())


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ...")])
def test_out_of_memory_is_a_clear_error_and_keeps_the_checkpoint(tmp_path, monkeypatch, one_thread, error):
    tree, save_dir = make_tree(tmp_path / "tree"), tmp_path / "run"
    train(tiny_config(tree, save_dir, max_epochs=1))
    kept = (save_dir / CHECKPOINT_NAME).read_bytes()

    def out_of_memory(*args, **kwargs):
        raise error

    monkeypatch.setattr(loss_module, "kernel_nll", out_of_memory)
    with pytest.raises(ResourceError, match=f"needs more memory than is free.*{save_dir} was kept.*--batch_size"):
        train(tiny_config(tree, save_dir, max_epochs=2), resume=True)
    assert (save_dir / CHECKPOINT_NAME).read_bytes() == kept


def test_other_runtime_errors_are_not_mistaken_for_memory(tmp_path, monkeypatch, one_thread):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(loss_module, "kernel_nll", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        train(tiny_config(make_tree(tmp_path / "tree"), tmp_path / "run"))
