"""Evaluation metrics against naive float64 references and hand-worked cases, and
evaluate_run / its command line end to end on a tiny image tree."""

import json
import math
import random

import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from nngk_lab import evaluation as ev
from nngk_lab.kernel.classify import classification_metrics
from nngk_lab.kernel.search import nearest_neighbours
from nngk_lab.evaluate import main as evaluate_main
from nngk_lab.kernel.bank import FeatureBank
from nngk_lab.files import atomic_save, safe_load
from nngk_lab.errors import DataError
from nngk_lab.training.config import make_config
from nngk_lab.training.runs import CHECKPOINT_KIND, CHECKPOINT_NAME
from nngk_lab.training.loop import train

from tiny_runs import TINY, write_tree


def fresh_generator():
    seed = random.randrange(2**31)
    return torch.Generator().manual_seed(seed), seed


# ------------------------------------------------------------------ naive references


def naive_order(features):
    """Every query's other items, nearest first (full float64 distance matrix: test only)."""
    f = features.double()
    d = torch.cdist(f, f)
    d.fill_diagonal_(math.inf)
    return d.argsort(1)[:, :-1]


def naive_recall(features, labels, k):
    order = naive_order(features)
    hits = [any(labels[j] == labels[i] for j in order[i, :k].tolist()) for i in range(len(labels))]
    return sum(hits) / len(labels)


def naive_map_at_r(features, labels):
    order = naive_order(features)
    scores = []
    for i in range(len(labels)):
        r = int((labels == labels[i]).sum()) - 1
        if r == 0:
            continue
        found, total = 0, 0.0
        for rank, j in enumerate(order[i, :r].tolist(), start=1):
            if labels[j] == labels[i]:
                found += 1
                total += found / rank
        scores.append(total / r)
    return sum(scores) / len(scores) if scores else math.nan


def random_problem(g, n=60, dim=4, num_classes=5):
    features = torch.randn(n, dim, generator=g, dtype=torch.float64)
    labels = torch.randint(num_classes, (n,), generator=g)
    return features, labels


# ------------------------------------------------------------------ Recall@K and MAP@R


def test_hand_worked_case():
    # 1-D points; worked by hand: neighbours (nearest first) and their labels
    #  0 (class 0): 1, 10, 11, 12.5 -> 1 0 1 1   R=1: miss at 1, hit at 2;   AP = 0
    #  1 (class 1): 0, 10, 11, 12.5 -> 0 0 1 1   R=2: hit first at 3;        AP = 0
    # 10 (class 0): 11, 12.5, 1, 0  -> 1 1 1 0   R=1: hit first at 4;        AP = 0
    # 11 (class 1): 10, 12.5, 1, 0  -> 0 1 1 0   R=2: hit at 2;              AP = (1/2)(1/2)
    # 12.5 (cl. 1): 11, 10, 1, 0    -> 1 0 1 0   R=2: hit at 1;              AP = (1/2)(1)
    features = torch.tensor([[0.0], [1.0], [10.0], [11.0], [12.5]])
    labels = torch.tensor([0, 1, 0, 1, 1])
    assert ev.recall_at_k(features, labels, ks=(1, 2, 3, 4)) == {1: 0.2, 2: 0.6, 3: 0.8, 4: 1.0}
    assert ev.map_at_r(features, labels) == pytest.approx((0 + 0 + 0 + 0.25 + 0.5) / 5)


@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_recall_and_map_match_naive_reference(chunk_size):
    g, seed = fresh_generator()
    features, labels = random_problem(g)
    recall = ev.recall_at_k(features, labels, ks=(1, 2, 4, 8, 59), chunk_size=chunk_size)
    for k, value in recall.items():
        assert value == pytest.approx(naive_recall(features, labels, k), abs=1e-12), (seed, k)
    assert ev.map_at_r(features, labels, chunk_size=chunk_size) == pytest.approx(
        naive_map_at_r(features, labels), abs=1e-12), seed


def test_map_at_r_leaves_out_singleton_classes():
    g, seed = fresh_generator()
    features, _ = random_problem(g, n=12)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 5])  # classes 2, 4 and 5 are singletons
    assert ev.map_at_r(features, labels) == pytest.approx(naive_map_at_r(features, labels), abs=1e-12), seed
    assert math.isnan(ev.map_at_r(features, torch.arange(12)))
    # a singleton query still counts in Recall@K, as a miss
    assert ev.recall_at_k(features, torch.arange(12), ks=(11,)) == {11: 0.0}


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
def test_perfect_embedding_scores_one(scale):
    g, seed = fresh_generator()
    labels = torch.arange(6).repeat_interleave(9)[torch.randperm(54, generator=g)]
    centres = 100.0 * torch.randn(6, 5, generator=g)
    features = scale * (centres[labels] + torch.randn(54, 5, generator=g))
    assert ev.recall_at_k(features, labels) == {1: 1.0, 2: 1.0, 4: 1.0, 8: 1.0}, seed
    assert ev.map_at_r(features, labels) == 1.0, seed
    assert ev.nmi(features, labels) == pytest.approx(1.0), seed


def test_exact_duplicates_do_not_count_the_query_itself():
    # Three identical images per class: every other copy ties with the query at distance 0.
    features = torch.tensor([[0.0, 0.0]] * 3 + [[5.0, 5.0]] * 3)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert ev.recall_at_k(features, labels, ks=(1, 2, 5)) == {1: 1.0, 2: 1.0, 5: 1.0}
    assert ev.map_at_r(features, labels, chunk_size=2) == 1.0
    # Identical images with different classes: only the other copy can be found.
    features = torch.zeros(2, 3)
    assert ev.recall_at_k(features, torch.tensor([0, 1]), ks=(1,)) == {1: 0.0}


def test_labels_unrelated_to_features_score_chance():
    g, seed = fresh_generator()
    n, num_classes = 2000, 4
    features = torch.randn(n, 8, generator=g)
    labels = torch.arange(num_classes).repeat_interleave(n // num_classes)[torch.randperm(n, generator=g)]
    m, r = n - 1, n // num_classes - 1  # other items; other items of the query's class
    recall = ev.recall_at_k(features, labels, ks=(1, 8))
    # hypergeometric: P(no match among k of the m others) = C(m - r, k) / C(m, k)
    for k in (1, 8):
        chance = 1 - math.comb(m - r, k) / math.comb(m, k)
        assert recall[k] == pytest.approx(chance, abs=0.04), (seed, k)
    # E[AP@R] for a random order: (1/R) sum_i (1/i) [R/m + (i-1) R(R-1)/(m(m-1))]
    chance_map = sum((r / m + (i - 1) * r * (r - 1) / (m * (m - 1))) / i for i in range(1, r + 1)) / r
    assert ev.map_at_r(features, labels) == pytest.approx(chance_map, abs=0.01), seed
    assert ev.nmi(features, labels) < 0.02, seed


def test_bad_inputs_raise():
    features, labels = torch.randn(5, 3), torch.tensor([0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="1..4"):
        ev.recall_at_k(features, labels, ks=(1, 5))
    with pytest.raises(ValueError, match="1..4"):
        ev.recall_at_k(features, labels, ks=(0,))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        ev.recall_at_k(features, labels[:4])
    with pytest.raises(ValueError, match="at least 2"):
        ev.map_at_r(features[:1], labels[:1])


def test_retrieval_never_searches_more_than_a_chunk_of_queries(monkeypatch):
    calls = []
    search = nearest_neighbours

    def recording_search(queries, centres, k, **kwargs):
        calls.append((queries.shape[0], centres.shape[0], k))
        return search(queries, centres, k, **kwargs)

    monkeypatch.setattr(ev.metrics, "nearest_neighbours", recording_search)
    g, _ = fresh_generator()
    features, labels = random_problem(g, n=50)
    ev.recall_at_k(features, labels, chunk_size=8)
    ev.map_at_r(features, labels, chunk_size=8)
    assert calls and all(q <= 8 and c == 50 for q, c, _ in calls)
    assert sum(q for q, _, k in calls if k == 9) == 50  # Recall@8 asks for 8 + the query itself


# ------------------------------------------------------------------ NMI and classification


def test_nmi_is_scikit_learn_kmeans_and_nmi():
    g, seed = fresh_generator()
    features, labels = random_problem(g, n=80, num_classes=4)
    features[:, 0] += 3.0 * labels  # partly clustered, so the score is neither 0 nor 1
    clusters = KMeans(n_clusters=4, n_init=3, random_state=7).fit_predict(features.float().numpy())
    expected = normalized_mutual_info_score(labels.numpy(), clusters)
    assert ev.nmi(features, labels, seed=7) == pytest.approx(expected, abs=1e-12), seed
    assert ev.nmi(features, labels + 10, seed=7) == pytest.approx(expected, abs=1e-12)  # names do not matter


def naive_kernel_predict(queries, centres, centre_labels, log_weights, sigma, k, num_classes):
    d = torch.cdist(queries.double(), centres.double()).square()
    nearest = d.argsort(1)[:, :k]
    predictions = []
    for i in range(len(queries)):
        sums = [0.0] * num_classes
        for j in nearest[i].tolist():
            sums[int(centre_labels[j])] += math.exp(float(log_weights[j]) - float(d[i, j]) / (2 * sigma**2))
        predictions.append(max(range(num_classes), key=sums.__getitem__))
    return torch.tensor(predictions)


@pytest.mark.parametrize("k", [1, 5, 30])
def test_classification_metrics_match_naive_reference(k):
    g, seed = fresh_generator()
    centres, centre_labels = random_problem(g, n=30, dim=3, num_classes=3)
    queries, labels = random_problem(g, n=25, dim=3, num_classes=3)
    log_weights = 0.5 * torch.randn(30, generator=g, dtype=torch.float64)
    head = torch.nn.Linear(3, 3).double()
    bank = FeatureBank(centres, centre_labels)
    result = classification_metrics(queries, labels, bank, log_weights, 1.5, k, 3, head)
    kernel = naive_kernel_predict(queries, centres, centre_labels, log_weights, 1.5, k, 3)
    one_nn = centre_labels[torch.cdist(queries, centres).argmin(1)]
    with torch.no_grad():
        softmax = head(queries).argmax(1)
    assert result["kernel_accuracy"] == pytest.approx(float((kernel == labels).double().mean())), seed
    assert result["nearest_neighbour_accuracy"] == pytest.approx(float((one_nn == labels).double().mean())), seed
    assert result["softmax_accuracy"] == pytest.approx(float((softmax == labels).double().mean())), seed
    no_weights = classification_metrics(queries, labels, bank, None, 1.5, k, 3)
    assert "softmax_accuracy" not in no_weights
    kernel = naive_kernel_predict(queries, centres, centre_labels, torch.zeros(30), 1.5, k, 3)
    assert no_weights["kernel_accuracy"] == pytest.approx(float((kernel == labels).double().mean())), seed


# ------------------------------------------------------------------ a saved run, end to end


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("tree"))


@pytest.fixture(scope="module")
def runs(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    made = {}
    for name, settings in {"nngk": dict(max_epochs=2), "softmax": dict(loss="softmax", max_epochs=2),
                           "untrained": dict(max_epochs=0)}.items():
        config = make_config(data_dir=str(tree), save_dir=str(out / name), **TINY, **settings)
        train(config)
        made[name] = out / name
    return made


RETRIEVAL_KEYS = {"recall@1", "recall@2", "recall@4", "recall@8", "map@r", "nmi"}
CLASSIFICATION_KEYS = {"accuracy", "kernel_accuracy", "nearest_neighbour_accuracy"}


def test_command_line_prints_table_and_writes_metrics(runs, capsys):
    assert evaluate_main(["--save_dir", str(runs["nngk"]), "--no_progress"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((runs["nngk"] / "metrics.json").read_text())
    assert (metrics["classes"], metrics["trained_classes"], metrics["heldout_images"]) == (4, 2, 24)
    assert metrics["test_images"] + metrics["train_images"] == 24
    for network in ("trained", "untrained"):
        assert set(metrics[network]) == CLASSIFICATION_KEYS | RETRIEVAL_KEYS
        assert all(0.0 <= v <= 1.0 for v in metrics[network].values())
        assert metrics[network]["accuracy"] == metrics[network]["kernel_accuracy"]
    assert "recall@1" in out and f"{metrics['trained']['recall@1']:.4f}" in out
    assert "untrained" in out


def test_softmax_run_is_judged_by_its_head(runs):
    metrics = ev.evaluate_run(runs["softmax"], progress=False)
    assert metrics["loss"] == "softmax"
    for network in ("trained", "untrained"):
        assert set(metrics[network]) == CLASSIFICATION_KEYS | {"softmax_accuracy"} | RETRIEVAL_KEYS
        assert metrics[network]["accuracy"] == metrics[network]["softmax_accuracy"]


def test_untrained_network_is_the_one_training_started_from(runs):
    # A run of 0 epochs saves its initial network: both columns must agree exactly.
    metrics = ev.evaluate_run(runs["untrained"], progress=False)
    assert metrics["trained"] == metrics["untrained"]


def test_stale_bank_is_rebuilt_to_the_same_numbers(runs, tmp_path):
    reference = ev.evaluate_run(runs["nngk"], progress=False)
    state = safe_load(runs["nngk"] / CHECKPOINT_NAME, CHECKPOINT_KIND)
    bank = state["bank"]
    state["bank"] = {**bank, "features": torch.zeros_like(bank["features"])}  # as if never refreshed
    state["finished"] = False
    copy = tmp_path / "stopped"
    atomic_save(state, copy / CHECKPOINT_NAME)
    metrics = ev.evaluate_run(copy, progress=False)
    assert metrics["trained"] == reference["trained"]
    assert not metrics["finished"]


def test_data_dir_with_other_classes_is_refused(runs, tmp_path, capsys):
    other = write_tree(tmp_path / "other", num_classes=3)
    with pytest.raises(DataError, match="trained on classes"):
        ev.evaluate_run(runs["nngk"], data_dir=other, progress=False)
    assert evaluate_main(["--save_dir", str(runs["nngk"]), "--data_dir", str(other), "--no_progress"]) == 2
    assert "error:" in capsys.readouterr().err


def test_retrieval_on_a_single_class_is_nan_with_a_warning_not_perfect():
    with pytest.warns(UserWarning, match="retrieval needs at least 2 classes"):
        result = ev.retrieval_metrics(torch.randn(10, 8), torch.zeros(10, dtype=torch.long))
    assert result.keys() >= {"recall@1", "recall@8", "map@r", "nmi"}
    assert all(math.isnan(v) for v in result.values())
    two = ev.retrieval_metrics(torch.randn(10, 8), torch.arange(10) % 2)  # two classes: real numbers
    assert not any(math.isnan(v) for v in two.values())
