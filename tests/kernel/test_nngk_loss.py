"""nngk_lab.NNGKLoss on its own: the loss and gradients against a naive float64 reference,
the bank its refresh builds, exact resumption from state_dict() in a plain loop, one-sentence
errors, and the pytorch-metric-learning face (samplers, AccuracyCalculator, BanklessLoss).
Inputs are drawn fresh on every run (the ``seed`` fixture in conftest.py)."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nngk_lab import BanklessLoss, NNGKLoss, WithIndex
from nngk_lab.errors import CheckpointError, ConfigError, DataError
from nngk_lab.kernel import nngk_loss as loss_module
from nngk_lab.kernel.classify import nearest_neighbour_predict


def _points(n, dim, classes, generator=None):
    return torch.randn(n, dim, generator=generator), torch.randint(classes, (n,), generator=generator)


def _refreshed(centres, labels, k, sigma, **options):
    """An NNGKLoss whose bank holds ``centres`` (an identity model embeds them), refreshed
    through a shuffled loader, so every centre must land at its own index."""
    loss_fn = NNGKLoss(len(centres), sigma, k, **options)
    loader = DataLoader(WithIndex(TensorDataset(centres, labels)), batch_size=7, shuffle=True)
    loss_fn.refresh(nn.Identity(), loader)
    return loss_fn


def naive_loss(x, labels, index, centres, centre_labels, neighbours, log_w, sigma, batch_kernels):
    """Mean -log p(y | x) over the queries whose class is among their kernels, one query
    and one kernel at a time, in float64. With ``batch_kernels`` a stored neighbour that is
    in the batch is left out and every other batch image is a kernel at its embedding."""
    terms = []
    for b in range(len(x)):
        kernels = [(log_w[i] - (x[b] - centres[i]).square().sum() / (2 * sigma ** 2), int(centre_labels[i]))
                   for i in neighbours[int(index[b])].tolist() if not (batch_kernels and i in index.tolist())]
        if batch_kernels:
            kernels += [(log_w[int(index[j])] - (x[b] - x[j]).square().sum() / (2 * sigma ** 2), int(labels[j]))
                        for j in range(len(x)) if j != b]
        true = [value for value, label in kernels if label == int(labels[b])]
        if true:
            terms.append(torch.logsumexp(torch.stack([v for v, _ in kernels]), 0) - torch.logsumexp(torch.stack(true), 0))
    return sum(terms) / max(len(terms), 1) if terms else torch.zeros((), dtype=torch.float64)


@pytest.mark.parametrize("batch_kernels", [False, True], ids=["bank", "bank+batch"])
def test_loss_and_gradients_match_a_naive_float64_reference(seed, batch_kernels):
    n, dim, classes, k, batch = 30, 5, 3, 6, 9
    sigma = float(torch.empty(()).uniform_(0.5, 2.0))
    centres, centre_labels = _points(n, dim, classes)
    loss_fn = _refreshed(centres, centre_labels, k, sigma, batch_kernels=batch_kernels)
    with torch.no_grad():
        loss_fn.log_weights.normal_(0, 0.5)
    index = torch.randperm(n)[:batch]
    x = (centres[index] + 0.5 * torch.randn(batch, dim)).requires_grad_(True)
    loss = loss_fn(x, centre_labels[index], index)
    loss.backward()

    # The bank: every centre at its index, and its K nearest other centres by brute force.
    assert torch.equal(loss_fn.bank.features, centres) and torch.equal(loss_fn.bank.labels, centre_labels)
    distances = torch.cdist(centres.double(), centres.double()).fill_diagonal_(math.inf)
    assert torch.equal(loss_fn.bank.neighbours.sort(1).values, distances.topk(k, largest=False).indices.sort(1).values)

    x64 = x.detach().double().requires_grad_(True)
    w64 = loss_fn.log_weights.detach().double().requires_grad_(True)
    expected = naive_loss(x64, centre_labels[index], index, centres.double(), centre_labels, loss_fn.bank.neighbours,
                          w64, sigma, batch_kernels)
    if expected.requires_grad:
        expected.backward()
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), x64.grad if x64.grad is not None else torch.zeros_like(x64),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(loss_fn.log_weights.grad.double(), w64.grad if w64.grad is not None
                               else torch.zeros_like(w64), rtol=1e-4, atol=1e-6)


def test_the_cpu_uses_the_plain_loss_and_predicts_as_the_classifier(seed, monkeypatch):
    centres, labels = _points(25, 4, 3)
    loss_fn = _refreshed(centres, labels, 5, 1.0)
    calls = []
    real = loss_module.kernel_nll
    monkeypatch.setattr(loss_module, "kernel_nll", lambda *a, **k: calls.append(1) or real(*a, **k))
    index = torch.arange(10)
    out = loss_fn.compute(centres[index], labels[index], index)
    assert calls == [1]
    # The predictions are the kernel classifier's argmax over its neighbours' class sums.
    logits = out.logits.double()
    sums = torch.zeros(10, 3, dtype=torch.float64).scatter_add(1, labels[loss_fn.bank.neighbours[index]],
                                                                logits.exp())
    assert torch.equal(out.predictions, sums.argmax(1))


def test_the_fused_loss_is_used_where_it_works_as_the_trainer_chooses(seed, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the CPU runs the Triton kernels, as a GPU would
    centres, labels = _points(25, 4, 3)
    loss_fn = _refreshed(centres, labels, 5, 1.0)
    calls = []
    for name in ("kernel_nll", "fused_kernel_nll", "kernel_nll_with_batch"):
        real = getattr(loss_module, name)
        monkeypatch.setattr(loss_module, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    index = torch.arange(10)
    results = []
    for fused, batch_kernels in ((True, False), (False, False), (True, True)):
        loss_fn.fused, loss_fn.batch_kernels = fused, batch_kernels
        results.append(loss_fn.compute(centres[index] + 0.1, labels[index], index))
    assert calls == ["fused_kernel_nll", "kernel_nll", "kernel_nll_with_batch"]
    torch.testing.assert_close(results[0].loss, results[1].loss, rtol=1e-5, atol=1e-6)
    assert torch.equal(results[0].predictions, results[1].predictions)


def test_update_moves_the_batch_centres_and_nothing_else(seed):
    centres, labels = _points(20, 3, 2)
    loss_fn = _refreshed(centres, labels, 4, 1.0, momentum=0.25)
    before = loss_fn.bank.features.clone()
    index, fresh = torch.tensor([3, 11, 0]), torch.randn(3, 3)
    loss_fn.update(fresh, index)
    expected = before.clone()
    expected[index] = 0.25 * before[index] + 0.75 * fresh
    torch.testing.assert_close(loss_fn.bank.features, expected)
    torch.testing.assert_close(loss_fn.bank.sq_norms, expected.square().sum(1))


def _train(loss_fn, model, optimiser, data, labels, start=(0, 0), stop=(3, 0)):
    """A plain loop: a refresh at each epoch's start, steps in a seeded order, the online
    update after each step. Runs from (epoch, step) ``start`` to ``stop``; returns the losses."""
    losses = []
    loader = DataLoader(WithIndex(TensorDataset(data, labels)), batch_size=10)
    for epoch in range(start[0], stop[0] + 1):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch)).split(8)
        first = start[1] if epoch == start[0] else 0
        last = stop[1] if epoch == stop[0] else len(order)
        if first == 0 and last > 0:
            loss_fn.refresh(model, loader)
        for index in order[first:last]:
            embeddings = model(data[index])
            loss = loss_fn(embeddings, labels[index], index)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            loss_fn.update(embeddings.detach(), index)
            losses.append(loss.item())
    return losses


def _fresh(seed):
    torch.manual_seed(seed)
    model = nn.Linear(6, 4)
    loss_fn = NNGKLoss(40, 1.0, 5, momentum=0.5)
    return model, loss_fn, torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=1e-2)


def test_a_plain_loop_resumes_exactly_from_state_dict(seed, tmp_path):
    data, labels = _points(40, 6, 3)
    model, loss_fn, optimiser = _fresh(seed)
    whole = _train(loss_fn, model, optimiser, data, labels)

    model2, loss2, optimiser2 = _fresh(seed)
    first = _train(loss2, model2, optimiser2, data, labels, stop=(1, 2))
    torch.save({"model": model2.state_dict(), "loss": loss2.state_dict(), "optimiser": optimiser2.state_dict()},
               tmp_path / "checkpoint.pt")
    model3, loss3, optimiser3 = _fresh(seed + 1)  # other initial weights, no bank
    saved = torch.load(tmp_path / "checkpoint.pt")
    model3.load_state_dict(saved["model"])
    loss3.load_state_dict(saved["loss"])
    optimiser3.load_state_dict(saved["optimiser"])
    rest = _train(loss3, model3, optimiser3, data, labels, start=(1, 2))

    assert first + rest == whole
    assert torch.equal(loss3.log_weights, loss_fn.log_weights)
    assert all(torch.equal(a, b) for a, b in zip(model3.state_dict().values(), model.state_dict().values()))
    for name in ("features", "labels", "neighbours", "sq_norms"):
        assert torch.equal(getattr(loss3.bank, name), getattr(loss_fn.bank, name))


def test_state_dict_holds_the_weights_and_the_bank():
    data, labels = _points(12, 3, 2)
    loss_fn = _refreshed(data, labels, 3, 1.0)
    state = loss_fn.state_dict()
    assert set(state) == {"kernel_weights.log_weights", "_extra_state"}
    empty = NNGKLoss(12, 1.0, 3)
    assert empty.state_dict()["_extra_state"] == {"bank": None}
    empty.load_state_dict(state)
    assert torch.equal(empty.bank.neighbours, loss_fn.bank.neighbours)
    with pytest.raises(DataError, match="the bank holds 12 centres but this NNGKLoss has 13"):
        NNGKLoss(13, 1.0, 3).load_state_dict(state)
    with pytest.raises(CheckpointError, match="no bank entry"):
        empty.set_extra_state({})


def _one_sentence(excinfo):
    text = str(excinfo.value)
    assert "\n" not in text and text.count(". ") == 0, text
    return text


def test_bad_input_is_one_sentence():
    data, labels = _points(20, 4, 3)
    loss_fn = NNGKLoss(20, 1.0, 5)
    index = torch.arange(4)
    for call in (lambda: loss_fn(data[index], labels[index], index), lambda: loss_fn.update(data[index], index)):
        with pytest.raises(ConfigError, match="no bank yet: call loss.refresh") as e:
            call()
        _one_sentence(e)
    loss_fn.refresh(nn.Identity(), DataLoader(WithIndex(TensorDataset(data, labels)), batch_size=8))
    with pytest.raises(ConfigError, match=r"embeddings have shape \(4, 3\) but the bank's centres are 4-dim") as e:
        loss_fn(data[index, :3], labels[index], index)
    _one_sentence(e)
    for bad in (20, -1):
        with pytest.raises(DataError, match=f"index {bad} is outside the bank of 20 centres") as e:
            loss_fn(data[index], labels[index], torch.tensor([0, 1, bad, 3]))
        _one_sentence(e)
    wrong = labels[index].clone()
    wrong[2] = (wrong[2] + 1) % 3
    with pytest.raises(DataError, match=f"the image at index 2 has label {int(wrong[2])} but the bank's centre 2 "
                                        f"has label {int(labels[2])}") as e:
        loss_fn(data[index], wrong, index)
    _one_sentence(e)
    with pytest.raises(DataError, match="dataset has 19 images but this NNGKLoss has 20 centres") as e:
        loss_fn.refresh(nn.Identity(), DataLoader(WithIndex(TensorDataset(data[:19], labels[:19]))))
    _one_sentence(e)
    with pytest.raises(ConfigError, match="num_neighbours 20 is more than the 19 other centres") as e:
        NNGKLoss(20, 1.0, 20).refresh(nn.Identity(), DataLoader(WithIndex(TensorDataset(data, labels))))
    _one_sentence(e)
    with pytest.raises(ConfigError, match="sigma must be a positive finite number"):
        NNGKLoss(20, 0.0)


def test_pml_samplers_and_accuracy_calculator_work_with_it(seed):
    from pytorch_metric_learning.samplers import MPerClassSampler
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    data, labels = _points(48, 5, 4)
    model = nn.Linear(5, 5)
    loss_fn = NNGKLoss(48, 1.0, 6)
    loss_fn.refresh(model, DataLoader(WithIndex(TensorDataset(data, labels)), batch_size=16))
    sampler = MPerClassSampler(labels, m=4, batch_size=8, length_before_new_iter=48)
    for images, targets, index in DataLoader(WithIndex(TensorDataset(data, labels)), batch_size=8, sampler=sampler):
        assert torch.isfinite(loss_fn(model(images), targets, index))
    # The bank's centres are reference embeddings for pytorch-metric-learning's metrics.
    queries, query_labels = _points(30, 5, 4)
    with torch.no_grad():
        embedded = model(queries)
    metrics = AccuracyCalculator(include=("precision_at_1",), k=1).get_accuracy(
        embedded, query_labels, loss_fn.bank.features, loss_fn.bank.labels, ref_includes_query=False)
    nearest = nearest_neighbour_predict(embedded, loss_fn.bank)
    assert metrics["precision_at_1"] == pytest.approx(float((nearest == query_labels).float().mean()))


def test_bankless_loss_gives_a_pml_loss_the_same_calls(seed):
    from pytorch_metric_learning.losses import MultiSimilarityLoss

    embeddings, labels = torch.randn(8, 4, requires_grad=True), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    wrapped = BanklessLoss(MultiSimilarityLoss())
    wrapped.refresh(nn.Identity(), None)
    wrapped.update(embeddings, torch.arange(8))
    assert torch.equal(wrapped(embeddings, labels, torch.arange(8)), MultiSimilarityLoss()(embeddings, labels))


def test_a_learnt_sigma_gets_the_naive_float64_gradient(seed):
    n, dim, classes, k, batch = 30, 5, 3, 6, 9
    sigma = float(torch.empty(()).uniform_(0.5, 2.0))
    centres, centre_labels = _points(n, dim, classes)
    loss_fn = _refreshed(centres, centre_labels, k, sigma, learn_sigma=True)
    assert [name for name, _ in loss_fn.named_parameters()] == ["kernel_weights.log_weights",
                                                                "kernel_weights.log_sigma"]
    assert math.isclose(loss_fn.sigma, sigma, rel_tol=1e-6)
    index = torch.randperm(n)[:batch]
    x = (centres[index] + 0.5 * torch.randn(batch, dim)).requires_grad_(True)
    loss = loss_fn(x, centre_labels[index], index)
    loss.backward()

    x64 = x.detach().double().requires_grad_(True)
    sigma64 = torch.tensor(sigma, dtype=torch.float64, requires_grad=True)
    expected = naive_loss(x64, centre_labels[index], index, centres.double(), centre_labels, loss_fn.bank.neighbours,
                          torch.zeros(n, dtype=torch.float64), sigma64, False)
    expected.backward()
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-6)
    # d loss / d log sigma = sigma * d loss / d sigma
    torch.testing.assert_close(loss_fn.kernel_weights.log_sigma.grad.double(), sigma * sigma64.grad,
                               rtol=1e-4, atol=1e-6)

    # Far-off queries (hundreds of sigmas, every kernel underflowing exp) and a tiny sigma:
    # the loss and every gradient stay finite.
    with torch.no_grad():
        loss_fn.kernel_weights.log_sigma.fill_(math.log(1e-3))
    far = (centres[index] + 50 * torch.randn(batch, dim)).requires_grad_(True)
    loss_fn.zero_grad()
    loss = loss_fn(far, centre_labels[index], index)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(far.grad).all()
    assert torch.isfinite(loss_fn.kernel_weights.log_sigma.grad)


def test_a_learnt_sigma_moves_and_goes_with_the_state_dict_and_is_never_fused(seed, monkeypatch):
    centres, labels = _points(24, 3, 3)
    loss_fn = _refreshed(centres, labels, 5, 0.7, learn_sigma=True)
    monkeypatch.setattr(loss_module, "fused_loss_usable", lambda device: True)
    monkeypatch.setattr(loss_module, "fused_kernel_nll", lambda *a, **kw: pytest.fail("fused with a learnt sigma"))
    optimiser = torch.optim.Adam(loss_fn.parameters(), lr=0.05)
    for _ in range(5):
        index = torch.randperm(24)[:8]
        loss = loss_fn(centres[index] + 0.3 * torch.randn(8, 3), labels[index], index)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert not math.isclose(loss_fn.sigma, 0.7, rel_tol=1e-3)
    restored = NNGKLoss(24, 0.7, 5, learn_sigma=True)
    restored.load_state_dict(loss_fn.state_dict())
    assert restored.sigma == loss_fn.sigma and restored.fixed_sigma == 0.7
    assert NNGKLoss(24, 0.7, 5).sigma == 0.7 and list(NNGKLoss(24, 0.7, 5).parameters())[-1].shape == (24,)


def test_staleness_is_the_mean_distance_from_the_stored_centres_in_sigmas(seed):
    centres, labels = _points(20, 4, 2)
    sigma = float(torch.empty(()).uniform_(0.1, 3.0))
    loss_fn = _refreshed(centres, labels, 5, sigma)
    index = torch.randperm(20)[:6]
    moved = centres[index] + torch.randn(6, 4) * torch.tensor([0.0, 0.1, 1.0, 3.0, 10.0, 1e3])[:, None]
    naive = sum(math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(moved[i], centres[int(j)])))
                for i, j in enumerate(index)) / sigma
    assert math.isclose(float(loss_fn.staleness(moved, index)), naive, rel_tol=1e-5)
    assert float(loss_fn.staleness(centres[index], index)) == 0.0
