"""The pytorch-metric-learning baselines in the harness: their numbers against naive
references, training and exact resumption (proxies and the class-balanced sampler
included) from Python and the command line, evaluation by the same code as an NNGK run,
and bad input as one sentence with nothing saved lost."""

from __future__ import annotations

import json
import math

import pytest
import torch

from nngk_lab.evaluation import run as evaluate_module
from nngk_lab.models.baselines import PML_LOSSES, BaselineLoss, in_batch_nearest_neighbour, pair_members
from nngk_lab.kernel.bank import embed
from nngk_lab.files import safe_load
from nngk_lab.train import main as train_main
from nngk_lab.evaluation.compare import comparison_table
from nngk_lab.training.config import make_config
from nngk_lab.errors import ConfigError
from nngk_lab.evaluation.run import evaluate_run
from nngk_lab.training.loaders import eval_loaders, load_split
from nngk_lab.kernel.loss import kernel_nll
from nngk_lab.training.runs import CHECKPOINT_KIND, CHECKPOINT_NAME, load_run
from nngk_lab.training.loop import train

from signals import signal_at_steps
from tiny_tree import history_without_time, make_tree, one_thread, same_tensors, tiny_argv, tiny_config  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("data") / "tree")


def _batch(seed: int, b: int = 12, d: int = 5, classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    return features, torch.randint(0, classes, (b,), generator=g)


# -- numbers against naive references ------------------------------------------------------


def test_nca_matches_a_naive_reference_and_the_kernel_loss_with_every_neighbour(seed):
    """PML's NCA (scale 1, squared distances) is the kernel loss with all other batch
    images as neighbours, every weight 1 and 1 / (2 sigma^2) = 1 (DESIGN.md, section 1)."""
    features, labels = _batch(seed)
    loss, present, _ = BaselineLoss("nca", 3, features.shape[1])(features, labels)
    terms = []
    for i in range(len(labels)):
        kernel = [math.exp(-float(((features[i] - features[j]) ** 2).sum())) for j in range(len(labels)) if j != i]
        same = [k for j, k in zip([j for j in range(len(labels)) if j != i], kernel) if labels[j] == labels[i]]
        assert bool(present[i]) == bool(same)
        if same:
            terms.append(-math.log(sum(same) / sum(kernel)))
    assert float(loss) == pytest.approx(sum(terms) / len(terms), rel=1e-9)
    others = torch.tensor([[j for j in range(len(labels)) if j != i] for i in range(len(labels))])
    kernel = kernel_nll(features, labels, features, labels, others, torch.zeros(len(labels), dtype=torch.float64),
                        math.sqrt(0.5))
    assert float(kernel.loss) == pytest.approx(float(loss), rel=1e-9)


def test_in_batch_nearest_neighbour_and_pair_members_match_loops(seed):
    features, labels = _batch(seed, b=9)
    predicted = in_batch_nearest_neighbour(features, labels)
    for i in range(len(labels)):
        distances = [float("inf") if j == i else float(((features[i] - features[j]) ** 2).sum())
                     for j in range(len(labels))]
        assert predicted[i] == labels[distances.index(min(distances))]
    assert in_batch_nearest_neighbour(features[:1], labels[:1]).tolist() == [-1]  # alone: no prediction
    g = torch.Generator().manual_seed(seed)
    pairs = tuple(torch.randint(0, 9, (int(torch.randint(0, 4, (1,), generator=g)),), generator=g) for _ in range(4))
    member = pair_members(pairs, 9, "cpu")
    assert member.tolist() == [any(i in p.tolist() for p in pairs) for i in range(9)]


@pytest.mark.parametrize("name", PML_LOSSES)
def test_a_batch_without_pairs_has_an_exact_zero_loss_and_is_reported(name, seed):
    # Four classes (no positive pair) on orthonormal vectors: every negative pair is sqrt(2)
    # apart, beyond the contrastive miner's margin, so no miner finds anything.
    g = torch.Generator().manual_seed(seed)
    features = torch.linalg.qr(torch.randn(5, 4, generator=g, dtype=torch.float64))[0].T.contiguous()
    features.requires_grad_()
    criterion = BaselineLoss(name, 4, features.shape[1])
    loss, present, _ = criterion(features, torch.arange(4))
    loss.backward()
    report = criterion.take_report()
    if name == "proxy_nca":  # proxies need no pairs
        assert present.all() and float(loss.detach()) > 0 and report is None
        return
    assert float(loss.detach()) == 0.0 and not present.any()
    assert torch.equal(features.grad, torch.zeros_like(features))
    assert report.startswith(f"{name}: ") and "in 1 of 1 batches" in report
    assert criterion.take_report() is None  # the counts start again


# -- training, checkpoints and exact resumption ---------------------------------------------


def _checkpoint(save_dir) -> dict:
    return safe_load(save_dir / CHECKPOINT_NAME, CHECKPOINT_KIND)


def _flat(state: dict) -> dict:
    """Model, criterion and optimiser tensors of a checkpoint, by name."""
    flat = {f"model.{k}": v for k, v in state["model"].items()}
    flat.update({f"criterion.{k}": v for k, v in state["criterion"].items()})
    flat.update({f"opt.{i}.{k}": v for i, s in state["optimiser"]["state"].items() for k, v in s.items()})
    return flat


@pytest.mark.parametrize("loss", PML_LOSSES)
def test_interrupted_pml_run_resumes_exactly(tree, tmp_path, monkeypatch, loss):
    settings = dict(loss=loss, sampler="m_per_class", m_per_class=4)
    reference = train(tiny_config(tree, tmp_path / "reference", **settings))
    with monkeypatch.context() as m:
        signal_at_steps(m, {3})  # mid-epoch (4 batches per epoch)
        assert train(tiny_config(tree, tmp_path / "run", **settings)).stop_reason == "interrupted"
    resumed = train(tiny_config(tree, tmp_path / "run", **settings), resume=True)
    assert history_without_time(resumed.history) == history_without_time(reference.history)
    state, expected = _checkpoint(tmp_path / "run"), _checkpoint(tmp_path / "reference")
    assert same_tensors(_flat(state), _flat(expected))
    assert state["config"]["sampler"] == "m_per_class" and state["config"]["loss"] == loss
    if loss == "proxy_nca":  # the proxies trained and were checkpointed
        proxies = state["criterion"]["loss.proxies"]
        initial = BaselineLoss("proxy_nca", 2, proxies.shape[1])
        assert proxies.shape[0] == 2 and not torch.equal(proxies, initial.loss.proxies.detach())


def test_each_loss_gets_its_authors_sampler_unless_told(tree, tmp_path):
    samplers = {loss: (make_config(loss=loss).sampler, make_config(loss=loss).m_per_class,
                       make_config(loss=loss).batch_size) for loss in ("nngk", "softmax", *PML_LOSSES)}
    assert samplers == {"nngk": ("random", 4, 64), "softmax": ("random", 4, 64), "nca": ("m_per_class", 4, 64),
                        "proxy_nca": ("random", 4, 64), "multi_similarity": ("m_per_class", 5, 80),
                        "contrastive": ("m_per_class", 4, 64)}
    assert make_config(loss="contrastive", sampler="random").sampler == "random"
    with pytest.raises(ConfigError, match="^--m_per_class applies to --sampler m_per_class only"):
        make_config(loss="proxy_nca", m_per_class=3)


def test_a_pml_run_is_evaluated_by_the_same_function_as_an_nngk_run(tree, tmp_path, monkeypatch):
    """evaluate_run measures both; its retrieval gets each run's own embedding of the
    held-out images (unit-length for the PML loss), and a PML run's own classifier is 1-NN."""
    seen = []
    real = evaluate_module.retrieval_metrics
    monkeypatch.setattr(evaluate_module, "retrieval_metrics",
                        lambda features, labels, **kw: seen.append(features) or real(features, labels, **kw))
    runs = {}
    for loss in ("nngk", "contrastive"):
        train(tiny_config(tree, tmp_path / loss, loss=loss, max_epochs=2))
        runs[loss] = evaluate_run(tmp_path / loss, progress=False)
    pml = runs["contrastive"]["trained"]
    assert pml["accuracy"] == pml["nearest_neighbour_accuracy"]
    assert runs["nngk"]["trained"]["accuracy"] == runs["nngk"]["trained"]["kernel_accuracy"]
    run = load_run(tmp_path / "contrastive")
    heldout = eval_loaders(run.config, load_split(run.config), torch.device("cpu"), ("heldout",))["heldout"]
    features, _ = embed(run.model, heldout, "cpu", False)
    assert torch.equal(seen[2], features)  # nngk trained, nngk untrained, then contrastive trained
    assert torch.allclose(features.norm(dim=1), torch.ones(len(features)), atol=1e-5)
    assert not torch.allclose(seen[0].norm(dim=1), torch.ones(len(seen[0])), atol=1e-2)
    table = comparison_table(runs.values())
    assert "| nngk |" not in table and "contrastive" in table and "nngk" in table


# -- the command line and bad input ---------------------------------------------------------


def test_cli_trains_resumes_and_refuses_another_loss(tree, tmp_path, capsys):
    save_dir = tmp_path / "run"
    assert train_main(tiny_argv(tree, save_dir, "--loss", "multi_similarity", "--batch_size", "10",
                                "--loss_options", '{"alpha": 7.5}', max_epochs=1)) == 0
    saved = json.loads((save_dir / "config.json").read_text())
    assert saved["sampler"] == "m_per_class" and json.loads(saved["loss_options"]) == {"alpha": 7.5}
    assert load_run(save_dir).config.pml_options() == ({"alpha": 7.5}, {})
    before = (save_dir / CHECKPOINT_NAME).read_bytes()
    capsys.readouterr()
    assert train_main(tiny_argv(tree, save_dir, "--loss", "nca", "--resume", max_epochs=2)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --loss nca differs from the run in") and err.count("\n") == 1
    assert (save_dir / CHECKPOINT_NAME).read_bytes() == before
    assert train_main(tiny_argv(tree, save_dir, "--resume", "--m_per_class", "5", "--batch_size", "10",
                                max_epochs=2)) == 0
    assert [e["epoch"] for e in json.loads((save_dir / "history.json").read_text())] == [1, 2]


@pytest.mark.parametrize("extra, message", [
    (["--loss", "triplet"], "error: argument --loss: invalid choice: 'triplet'"),
    (["--loss", "nca", "--m_per_class", "17", "--batch_size", "17"],
     "error: --m_per_class 17 is larger than the smallest trained class (class_000 has 16 training images); "
     "pass --m_per_class 16 or less"),
])
def test_bad_input_is_one_line_and_saves_nothing(tree, tmp_path, capsys, extra, message):
    try:
        status = train_main(tiny_argv(tree, tmp_path / "run", *extra))
    except SystemExit as e:  # argparse's own refusal of a flag
        status = e.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()


def test_batches_without_pairs_are_logged_and_leave_no_nan(tree, tmp_path, capsys):
    """Batches of two images, shuffled over two classes: about half hold no pair of a class."""
    result = train(tiny_config(tree, tmp_path / "run", loss="nca", sampler="random", batch_size=2, max_epochs=1,
                               dropout=0.0))
    err = capsys.readouterr().err
    assert "epoch 1: nca: no two images shared a class in " in err and " of 16 batches" in err
    entry = result.history[0]
    assert math.isfinite(entry["loss"]) and 0 < entry["absent_fraction"] < 1


def test_loss_and_miner_options_reach_pml_and_are_saved(tmp_path):
    config = make_config(loss="nca", save_dir=str(tmp_path / "run"), loss_options='{"softmax_scale": 50}')
    assert BaselineLoss("nca", 3, 4, *config.pml_options()).loss.softmax_scale == 50
    assert BaselineLoss("nca", 3, 4).loss.softmax_scale == 1  # PML's default when no option is given
    mined = make_config(loss="contrastive", save_dir="unused", miner_options='{"pos_margin": 0.1, "neg_margin": 0.7}')
    miner = BaselineLoss("contrastive", 3, 4, *mined.pml_options()).miner
    assert (miner.pos_margin, miner.neg_margin) == (0.1, 0.7)


@pytest.mark.parametrize("settings, message", [
    (dict(loss="nca", loss_options="{softmax_scale: 50}"), "--loss_options must be a JSON object"),
    (dict(loss="nca", loss_options="[50]"), "--loss_options must be a JSON object"),
    (dict(loss="nngk", loss_options='{"margin": 1}'), "--loss_options applies to the pytorch-metric-learning"),
    (dict(loss="nca", miner_options='{"epsilon": 0.1}'), "--miner_options applies to multi_similarity and contrastive"),
])
def test_bad_options_are_one_sentence(settings, message):
    with pytest.raises(ConfigError, match=message):
        make_config(save_dir="unused", **settings)


def test_an_option_pml_does_not_take_is_one_sentence():
    config = make_config(loss="nca", save_dir="unused", loss_options='{"no_such_argument": 1}')
    with pytest.raises(ConfigError, match=r"--loss_options .* do not fit pytorch-metric-learning's NCALoss"):
        BaselineLoss("nca", 3, 4, *config.pml_options())
