"""NNGKLoss is the method of nngk_lab's own trainer: a plain PyTorch loop with it gives the
trainer's losses and weights step for step on the CPU; examples/own_loop.py trains with it,
and with a pytorch-metric-learning loss by changing its one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from nngk_lab import NNGKLoss, build_model
from nngk_lab.data.folders import ImageSamples
from nngk_lab.data.transforms import build_transforms
from nngk_lab.files import safe_load
from nngk_lab.training import parts as parts_module
from nngk_lab.training.loaders import EpochOrder, load_split
from nngk_lab.training.loop import train

from tiny_tree import make_tree, one_thread, tiny_config  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "own_loop.py"


def _record_trainer_steps(monkeypatch) -> list[tuple[float, torch.Tensor]]:
    """(loss, kernel log-weights after the step) of each of the trainer's steps."""
    steps, real = [], parts_module.build_parts

    def build_parts(*args, **kwargs):
        parts = real(*args, **kwargs)
        compute, optimiser_step = parts.nngk.compute, parts.optimiser.step

        def recorded_compute(*a, **k):
            out = compute(*a, **k)
            steps.append([out.loss.item()])
            return out

        def recorded_step(*a, **k):
            optimiser_step(*a, **k)
            steps[-1].append(parts.nngk.log_weights.detach().clone())
        parts.nngk.compute, parts.optimiser.step = recorded_compute, recorded_step
        return parts

    monkeypatch.setattr(parts_module, "build_parts", build_parts)
    return steps


def _plain_loop(config) -> tuple[list, torch.nn.Module, NNGKLoss, DataLoader]:
    """The run of ``config`` as a user's own loop: the same model, data order and bank
    schedule (a refresh at each epoch's start, the online update after each step). Returns
    each step's (loss, log-weights), the model, the loss and the refresh's loader."""
    split = load_split(config)
    train_tf, eval_tf = build_transforms(config.input_size, config.resize_size, config.hflip, config.mean, config.std)
    torch.manual_seed(config.seed)
    model = build_model("small_cnn", final_relu=config.final_relu, pretrained="none",
                        normalise=config.unit_embeddings).to(memory_format=torch.channels_last)
    loss_fn = NNGKLoss(len(split.train), config.sigma, config.num_neighbours, split.num_trained,
                       batch_kernels=config.batch_kernels, momentum=config.centre_momentum,
                       unit_centres=config.unit_embeddings)
    optimiser = torch.optim.Adam([{"params": model.parameters(), "lr": config.learning_rate},
                                  {"params": loss_fn.parameters(), "lr": config.learning_rate}])
    train_set = ImageSamples(split.train, train_tf, seed=config.seed)
    bank_loader = DataLoader(ImageSamples(split.train, eval_tf), batch_size=config.batch_size)
    online, steps = config.centres == "online", []
    for epoch in range(config.max_epochs):
        if online and epoch > 0:
            loss_fn.refresh_neighbours()
        else:
            loss_fn.refresh(model, bank_loader)
        model.train()
        train_set.set_epoch(epoch)
        order = EpochOrder(len(train_set), config.seed, epoch, 0)
        for images, labels, index in DataLoader(train_set, batch_size=config.batch_size, sampler=order):
            embeddings = model(images)
            loss = loss_fn(embeddings, labels, index)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if online:
                loss_fn.update(embeddings.detach(), index)
            steps.append([loss.item(), loss_fn.log_weights.detach().clone()])
    return steps, model, loss_fn, bank_loader


@pytest.mark.parametrize("settings", [{}, {"centres": "online"}, {"batch_kernels": True}],
                         ids=["paper", "online", "batch_kernels"])
def test_a_plain_loop_trains_exactly_as_the_trainer(tmp_path, monkeypatch, one_thread, settings):
    config = tiny_config(make_tree(tmp_path / "tree", num_classes=3, per_class=12), tmp_path / "run", max_epochs=2,
                         dropout=0.0, hflip=False, monitor_test=False, in_memory=False, **settings)
    trainer_steps = _record_trainer_steps(monkeypatch)
    result = train(config)
    monkeypatch.undo()
    steps, model, loss_fn, bank_loader = _plain_loop(config)

    assert len(steps) == len(trainer_steps) == 2 * 3  # 2 epochs of 24 images in batches of 8
    for (loss, weights), (trainer_loss, trainer_weights) in zip(steps, trainer_steps):
        assert loss == trainer_loss and torch.equal(weights, trainer_weights)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), result.model.state_dict().values()))
    # The banks: the online centres as the checkpoint keeps them for the next step; the
    # paper's scheme ends with a refresh by the final model, as the next epoch's would be.
    if config.centres == "online":
        trained = safe_load(tmp_path / "run" / "checkpoint.pt")["bank"]["features"]
    else:
        loss_fn.refresh(model, bank_loader)
        trained = result.bank.features
    assert torch.equal(loss_fn.bank.features, trained)


def _run_example(tmp_path, source: str, epochs: int) -> subprocess.CompletedProcess:
    script = tmp_path / "own_loop.py"
    script.write_text(source)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(script), str(epochs)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_the_example_loop_trains_with_nngk_and_with_a_pml_loss_by_one_line(tmp_path):
    source = EXAMPLE.read_text()
    assert len(source.splitlines()) <= 40
    nngk = _run_example(tmp_path, source, 1)
    assert nngk.returncode == 0, nngk.stderr
    assert "epoch 1: last batch's loss" in nngk.stdout and "test accuracy" in nngk.stdout

    line = "loss_fn = NNGKLoss(len(train_set), sigma=0.2, num_neighbours=20)\n"
    pml = "# loss_fn = BanklessLoss(losses.MultiSimilarityLoss())"
    assert source.count(line) == 1 and source.count(pml) == 1
    swapped = source.replace(line, "").replace(pml, pml[2:])
    ms = _run_example(tmp_path, swapped, 1)
    assert ms.returncode == 0, ms.stderr
    assert "epoch 1: last batch's loss" in ms.stdout
