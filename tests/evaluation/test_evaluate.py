"""Evaluation metrics against naive float64 references and hand-worked cases, and
evaluate_run / its command line end to end on a tiny image tree."""

import json
import math
import random
import shutil
from pathlib import Path

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
from nngk_lab.data.folders import load_rgb
from nngk_lab.data.transforms import build_transforms
from nngk_lab.errors import CheckpointError, ConfigError
from nngk_lab.evaluation.embeddings import folder_embeddings, split_embeddings
from nngk_lab.training.loaders import load_split
from nngk_lab.training.runs import load_run
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


def separated_problem(g, n=60, dim=4, num_classes=5):
    """A float32 random problem whose distances from each item to the others differ by
    more than float32 rounding, so that every exact search (faiss computes in float32)
    ranks the neighbours as the float64 reference does."""
    while True:
        features, labels = random_problem(g, n, dim, num_classes)
        features = features.float()
        d = torch.cdist(features.double(), features.double()).square().sort(1).values[:, 1:]
        if bool((d.diff(dim=1) > 1e-4 * d[:, 1:]).all()) and float(d[:, 0].min()) > 1e-4:
            return features, labels


# The metrics' neighbour search: the torch backend, and faiss's (an optional dependency,
# installed from requirements.txt).
BACKENDS = ["torch", "faiss"]


def needs(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")


# ------------------------------------------------------------------ Recall@K and MAP@R


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_worked_case(backend):
    needs(backend)
    # 1-D points; worked by hand: neighbours (nearest first) and their labels
    #  0 (class 0): 1, 10, 11, 12.5 -> 1 0 1 1   R=1: miss at 1, hit at 2;   AP = 0
    #  1 (class 1): 0, 10, 11, 12.5 -> 0 0 1 1   R=2: hit first at 3;        AP = 0
    # 10 (class 0): 11, 12.5, 1, 0  -> 1 1 1 0   R=1: hit first at 4;        AP = 0
    # 11 (class 1): 10, 12.5, 1, 0  -> 0 1 1 0   R=2: hit at 2;              AP = (1/2)(1/2)
    # 12.5 (cl. 1): 11, 10, 1, 0    -> 1 0 1 0   R=2: hit at 1;              AP = (1/2)(1)
    features = torch.tensor([[0.0], [1.0], [10.0], [11.0], [12.5]])
    labels = torch.tensor([0, 1, 0, 1, 1])
    assert ev.recall_at_k(features, labels, ks=(1, 2, 3, 4), backend=backend) == {1: 0.2, 2: 0.6, 3: 0.8, 4: 1.0}
    assert ev.map_at_r(features, labels, backend=backend) == pytest.approx((0 + 0 + 0 + 0.25 + 0.5) / 5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_recall_and_map_match_naive_reference(chunk_size, backend):
    needs(backend)
    g, seed = fresh_generator()
    features, labels = random_problem(g) if backend == "torch" else separated_problem(g)
    recall = ev.recall_at_k(features, labels, ks=(1, 2, 4, 8, 59), chunk_size=chunk_size, backend=backend)
    for k, value in recall.items():
        assert value == pytest.approx(naive_recall(features, labels, k), abs=1e-12), (seed, k)
    assert ev.map_at_r(features, labels, chunk_size=chunk_size, backend=backend) == pytest.approx(
        naive_map_at_r(features, labels), abs=1e-12), seed
    metrics = ev.retrieval_metrics(features, labels, ks=(1, 8), chunk_size=chunk_size, backend=backend,
                                   with_nmi=False)
    assert metrics == pytest.approx({"recall@1": naive_recall(features, labels, 1),
                                     "recall@8": naive_recall(features, labels, 8),
                                     "map@r": naive_map_at_r(features, labels)}, abs=1e-12), seed


def test_the_searches_reach_the_backend_asked_for(monkeypatch):
    pytest.importorskip("faiss")
    from nngk_lab.kernel import search
    calls = []
    real = search.faiss_search
    monkeypatch.setattr(search, "faiss_search", lambda *a: calls.append(a[2]) or real(*a))
    g, _ = fresh_generator()
    features, labels = separated_problem(g, n=30)
    ev.retrieval_metrics(features, labels, ks=(1, 2), chunk_size=10, backend="faiss", with_nmi=False)
    assert calls == [3] * 3 + [int(labels.bincount().max())] * 3  # Recall@2 and MAP@R, each + the query


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


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_duplicates_do_not_count_the_query_itself(backend):
    needs(backend)
    # Three identical images per class: every other copy ties with the query at distance 0.
    features = torch.tensor([[0.0, 0.0]] * 3 + [[5.0, 5.0]] * 3)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert ev.recall_at_k(features, labels, ks=(1, 2, 5), backend=backend) == {1: 1.0, 2: 1.0, 5: 1.0}
    assert ev.map_at_r(features, labels, chunk_size=2, backend=backend) == 1.0
    # Identical images with different classes: only the other copy can be found.
    features = torch.zeros(2, 3)
    assert ev.recall_at_k(features, torch.tensor([0, 1]), ks=(1,), backend=backend) == {1: 0.0}


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
    with pytest.raises(CheckpointError, match="trained on classes"):
        ev.evaluate_run(runs["nngk"], data_dir=other, progress=False)
    assert evaluate_main(["--save_dir", str(runs["nngk"]), "--data_dir", str(other), "--no_progress"]) == 2
    assert "error:" in capsys.readouterr().err


def _stopped_copy(run_dir, where):
    """A copy of the run as if stopped before it finished, with a stale (zero) bank."""
    state = safe_load(run_dir / CHECKPOINT_NAME, CHECKPOINT_KIND)
    state["bank"] = {**state["bank"], "features": torch.zeros_like(state["bank"]["features"])}
    state["finished"] = False
    state.pop("eval_bank", None)
    atomic_save(state, where / CHECKPOINT_NAME)
    return where


def _changes(tree, where):
    """Copies of ``tree`` whose images are not the run's: one image added to one class;
    one renamed (the same number of images)."""
    added = Path(shutil.copytree(tree, where / "added"))
    shutil.copy(added / "class_001" / "im_00.png", added / "class_001" / "im_99.png")
    renamed = Path(shutil.copytree(tree, where / "renamed"))
    (renamed / "class_000" / "im_03.png").rename(renamed / "class_000" / "im_03b.png")
    return {"added": added, "renamed": renamed}


def test_changed_images_are_refused_and_metrics_json_is_kept(runs, tree, tmp_path, capsys):
    finished = runs["nngk"]
    ev.evaluate_run(finished, progress=False)
    before = (finished / ev.run.METRICS_NAME).read_bytes()
    stopped = _stopped_copy(finished, tmp_path / "stopped")
    for name, data in _changes(tree, tmp_path).items():
        for run_dir in (finished, stopped):  # a stopped run once failed with an IndexError instead
            with pytest.raises(CheckpointError, match=r"^the images in .* are not those .* was trained on "
                                                      r"\(files were added, removed or renamed\)"):
                ev.evaluate_run(run_dir, data_dir=data, progress=False)
            with pytest.raises(CheckpointError, match="are not those"):
                split_embeddings(run_dir, "heldout", data_dir=data)
            capsys.readouterr()
            assert evaluate_main(["--save_dir", str(run_dir), "--data_dir", str(data), "--no_progress"]) == 2
            err = capsys.readouterr().err
            assert err.startswith("error: the images in") and err.count("\n") == 1, (name, err)
    assert (finished / ev.run.METRICS_NAME).read_bytes() == before
    assert not (stopped / ev.run.METRICS_NAME).exists()


def test_a_moved_but_identical_folder_gives_the_same_numbers(runs, tree, tmp_path):
    reference = ev.evaluate_run(runs["nngk"], progress=False)
    moved = shutil.copytree(tree, tmp_path / "elsewhere" / "moved")
    metrics = ev.evaluate_run(runs["nngk"], data_dir=moved, progress=False)
    assert metrics["trained"] == reference["trained"] and metrics["untrained"] == reference["untrained"]
    assert metrics["data_dir"] == str(moved)


# ------------------------------------------------------------------ a run's embeddings, --ks, --no_nmi


def test_split_embeddings_are_what_evaluate_measures(runs, tree, tmp_path):
    run = load_run(runs["nngk"])
    split = load_split(run.config)
    for part in ("train", "test", "heldout"):
        e = split_embeddings(runs["nngk"], part)
        samples = getattr(split, part)
        assert e.paths == [p for p, _ in samples] and e.labels.tolist() == [y for _, y in samples]
        assert e.classes == split.classes and e.features.shape == (len(samples), run.model.embedding_dim)
        # Each row is the trained network's embedding of its image, one image at a time.
        _, eval_tf = build_transforms(run.config.input_size, run.config.resize_size, False, run.config.mean,
                                      run.config.std)
        with torch.no_grad():
            one = torch.stack([run.model(eval_tf(load_rgb(p)).unsqueeze(0))[0] for p in e.paths[:5]])
        assert torch.allclose(e.features[:5], one, atol=1e-5), part
    heldout = split_embeddings(run, "heldout")
    metrics = ev.evaluate_run(runs["nngk"], progress=False)["trained"]
    assert metrics["recall@1"] == pytest.approx(naive_recall(heldout.features, heldout.labels, 1), abs=1e-12)
    assert metrics["map@r"] == pytest.approx(naive_map_at_r(heldout.features, heldout.labels), abs=1e-12)
    with pytest.raises(ConfigError, match="part must be one of train, test, heldout"):
        split_embeddings(run, "validation")


def test_folder_embeddings_of_any_class_tree(runs, tree, tmp_path):
    # The held-out classes alone, in a folder of their own: the same images, the same rows.
    folder = tmp_path / "heldout_only"
    for name in ("class_002", "class_003"):
        shutil.copytree(tree / name, folder / name)
    e = folder_embeddings(runs["nngk"], folder, batch_size=5)
    heldout = split_embeddings(runs["nngk"], "heldout")
    assert e.classes == ["class_002", "class_003"] and torch.equal(e.labels + 2, heldout.labels)
    assert [Path(p).relative_to(folder) for p in e.paths] == [Path(p).relative_to(tree) for p in heldout.paths]
    assert torch.allclose(e.features, heldout.features, atol=1e-5)


def test_stopped_run_embeds_its_training_images_again(runs, tmp_path):
    stopped = _stopped_copy(runs["nngk"], tmp_path / "stopped")
    fresh = split_embeddings(stopped, "train").features
    assert not torch.equal(fresh, torch.zeros_like(fresh))
    assert torch.allclose(fresh, split_embeddings(runs["nngk"], "train").features, atol=1e-5)


def test_command_line_ks_and_no_nmi(runs, capsys):
    assert evaluate_main(["--save_dir", str(runs["nngk"]), "--no_progress", "--ks", "1", "3", "10", "1000",
                          "--no_nmi"]) == 0
    metrics = json.loads((runs["nngk"] / "metrics.json").read_text())
    heldout = split_embeddings(runs["nngk"], "heldout")  # 24 images: K = 1000 is left out
    assert set(metrics["trained"]) == CLASSIFICATION_KEYS | {"recall@1", "recall@3", "recall@10", "map@r"}
    for k in (1, 3, 10):
        assert metrics["trained"][f"recall@{k}"] == pytest.approx(
            naive_recall(heldout.features, heldout.labels, k), abs=1e-12)
    assert "recall@10" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:
        evaluate_main(["--save_dir", str(runs["nngk"]), "--no_progress", "--ks", "0"])
    assert exit.value.code == 2
    assert "each K must be at least 1" in capsys.readouterr().err


def test_retrieval_on_a_single_class_is_nan_with_a_warning_not_perfect():
    with pytest.warns(UserWarning, match="retrieval needs at least 2 classes"):
        result = ev.retrieval_metrics(torch.randn(10, 8), torch.zeros(10, dtype=torch.long))
    assert result.keys() >= {"recall@1", "recall@8", "map@r", "nmi"}
    assert all(math.isnan(v) for v in result.values())
    two = ev.retrieval_metrics(torch.randn(10, 8), torch.arange(10) % 2)  # two classes: real numbers
    assert not any(math.isnan(v) for v in two.values())
