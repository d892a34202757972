"""nngk_lab.kernel.loss.kernel_nll_with_batch (``--batch_kernels``) against a naive per-sample
float64 reference: each query's kernels are its K stored neighbours that are not in the
batch, and every other image of the batch at its current embedding.

Inputs are drawn fresh on every run (see the ``seed`` fixture in conftest.py).
"""

import json
import math

import pytest
import torch

from nngk_lab.training.config import make_config
from nngk_lab.errors import ConfigError
from nngk_lab.kernel.loss import kernel_nll, kernel_nll_with_batch
from nngk_lab.training.loop import train
from tiny_runs import TINY, write_tree


def _lse(values):
    m = max(values)
    return m + math.log(math.fsum(math.exp(v - m) for v in values))


def reference(features, targets, index, centres, centre_labels, neighbours, log_weights, sigma, num_classes):
    """(mean loss over present queries, present list, predicted classes), one query at a time."""
    x, c, v = features.double().tolist(), centres.double().tolist(), log_weights.double().tolist()
    t, idx, labels = targets.tolist(), index.tolist(), centre_labels.tolist()
    losses, present, predictions = [], [], []
    for i in range(len(x)):
        kernels = [(v[n] - math.fsum((a - b) ** 2 for a, b in zip(x[i], c[n])) / (2 * sigma ** 2), labels[n])
                   for n in neighbours[i].tolist() if n not in idx]
        kernels += [(v[idx[j]] - math.fsum((a - b) ** 2 for a, b in zip(x[i], x[j])) / (2 * sigma ** 2), t[j])
                    for j in range(len(x)) if j != i]
        total = _lse([lk for lk, _ in kernels])
        per_class = [_lse([lk for lk, y in kernels if y == cls]) if any(y == cls for _, y in kernels) else -math.inf
                     for cls in range(num_classes)]
        predictions.append(max(range(num_classes), key=lambda cls: per_class[cls]))
        present.append(per_class[t[i]] > -math.inf)
        if present[-1]:
            losses.append(total - per_class[t[i]])
    return (math.fsum(losses) / len(losses) if losses else 0.0), present, predictions


def draw(g, n=40, d=5, b=9, k=6, num_classes=4, scale=1.0, dtype=torch.float64):
    centres = torch.randn(n, d, generator=g, dtype=dtype) * scale
    centre_labels = torch.randint(0, num_classes, (n,), generator=g)
    index = torch.randperm(n, generator=g)[:b]
    features = (centres[index] + 0.3 * scale * torch.randn(b, d, generator=g, dtype=dtype)).requires_grad_()
    targets = centre_labels[index]
    # each query's neighbours: K other centres, some of them in the batch
    neighbours = torch.stack([torch.randperm(n, generator=g)[:k + 1] for _ in range(b)])
    neighbours = torch.stack([row[row != i][:k] for row, i in zip(neighbours, index)])
    log_weights = (0.5 * torch.randn(n, generator=g, dtype=dtype)).requires_grad_()
    return features, targets, index, centres, centre_labels, neighbours, log_weights


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_loss_gradients_and_predictions_match_the_reference(seed, scale):
    g = torch.Generator().manual_seed(seed)
    inputs = draw(g, scale=scale)
    sigma, num_classes = float(torch.empty(1).uniform_(0.5, 2.0, generator=g)), 4
    out = kernel_nll_with_batch(*inputs, sigma, num_classes)
    loss, present, predictions = reference(*[x.detach() for x in inputs], sigma, num_classes)
    assert out.present.tolist() == present
    assert out.predictions.tolist() == predictions
    assert torch.isfinite(out.loss)
    assert out.loss.item() == pytest.approx(loss, rel=1e-9, abs=1e-12)
    out.loss.backward()
    features, log_weights = inputs[0], inputs[-1]
    assert torch.isfinite(features.grad).all() and torch.isfinite(log_weights.grad).all()
    if scale == 1.0:  # at moderate distances the gradient is checked numerically too
        assert torch.autograd.gradcheck(lambda f, v: kernel_nll_with_batch(f, *inputs[1:6], v, sigma, num_classes).loss,
                                        (features.detach().requires_grad_(), log_weights.detach().requires_grad_()))


def test_without_batch_overlap_and_with_a_batch_of_one_it_is_the_plain_loss(seed):
    g = torch.Generator().manual_seed(seed)
    features, targets, index, centres, labels, neighbours, log_weights = draw(g, b=1)
    neighbours = neighbours[:, [n for n in range(neighbours.shape[1]) if neighbours[0, n] != index[0]]]
    out = kernel_nll_with_batch(features, targets, index, centres, labels, neighbours, log_weights, 0.7, 4)
    plain = kernel_nll(features, targets, centres, labels, neighbours, log_weights, 0.7)
    assert torch.allclose(out.loss, plain.loss)
    assert out.present.tolist() == plain.present.tolist()


def test_queries_without_a_kernel_of_their_class_are_left_out_with_finite_gradients(seed):
    g = torch.Generator().manual_seed(seed)
    features, targets, index, centres, labels, neighbours, log_weights = draw(g, b=3, num_classes=4)
    targets = torch.tensor([0, 1, 2])  # three classes, one image each: no fresh kernel of the own class
    labels = labels.clone()
    labels[neighbours[0]] = 3  # query 0 has no stored neighbour of its class either
    labels[neighbours[1]] = 1
    out = kernel_nll_with_batch(features, targets, index, centres, labels, neighbours, log_weights, 1.0, 4)
    assert out.present[0].item() is False
    out.loss.backward()
    assert torch.isfinite(features.grad).all() and torch.isfinite(log_weights.grad).all()
    loss, present, _ = reference(features.detach(), targets, index, centres, labels, neighbours,
                                 log_weights.detach(), 1.0, 4)
    assert out.present.tolist() == present and out.loss.item() == pytest.approx(loss, rel=1e-9, abs=1e-12)


def test_training_with_batch_kernels_learns_the_tiny_classes_and_records_the_flag(tmp_path):
    data = write_tree(tmp_path / "data", num_classes=4, per_class=12)
    save_dir = tmp_path / "run"
    train(make_config(**TINY, data_dir=str(data), num_classes=2, save_dir=str(save_dir), max_epochs=3,
                      centres="online", batch_kernels=True))
    config = json.loads((save_dir / "config.json").read_text())
    history = json.loads((save_dir / "history.json").read_text())
    assert config["batch_kernels"] is True and len(history) == 3
    assert all(math.isfinite(h["loss"]) for h in history)
    assert history[-1]["train_accuracy"] >= 0.9  # each class has its own bright row


def test_batch_kernels_with_another_loss_is_refused():
    with pytest.raises(ConfigError, match="--batch_kernels applies to --loss nngk only"):
        make_config(loss="softmax", batch_kernels=True)
