"""The label-noise experiment's parts: the flipped copy of a data folder, the
lowest-weight enrichment against a naive count, and the weight galleries."""

import math
import os

import pytest
import torch
from scipy.stats import hypergeom

from nngk_lab.explore import weights as weights_study
from nngk_lab.data.folders import scan_image_folder
from notebook_fixtures import make_embeddings
from nngk_lab.errors import ConfigError
from tiny_runs import TINY, write_tree


def test_flip_labels_moves_a_fraction_of_the_trained_images(tmp_path):
    source = write_tree(tmp_path / "source", num_classes=4, per_class=10)
    flipped = weights_study.flip_labels(source, tmp_path / "noisy", num_trained=3, fraction=0.2, seed=1)
    classes, samples = scan_image_folder(tmp_path / "noisy")
    assert classes == [f"class_{c:03d}" for c in range(4)] and len(samples) == 40
    assert len(flipped) == 6  # round(0.2 * 30): the held-out class is never flipped
    by_path = dict(samples)
    for link, original in flipped.items():
        assert os.path.islink(link) and classes[by_path[link]] != original and by_path[link] < 3
        assert os.path.realpath(link).startswith(str((source / original).resolve()))
    assert (tmp_path / "noisy" / "class_003").is_symlink()
    assert weights_study.is_flipped([p for p, _ in samples]).sum() == 6
    again = weights_study.flip_labels(source, tmp_path / "again", num_trained=3, fraction=0.2, seed=1)
    assert sorted(os.path.basename(p) for p in again) == sorted(os.path.basename(p) for p in flipped)
    with pytest.raises(FileExistsError):
        weights_study.flip_labels(source, tmp_path / "noisy", 3, 0.2)
    with pytest.raises(ValueError):
        weights_study.flip_labels(source, tmp_path / "bad", 1, 0.2)


def naive_enrichment(log_weights, flipped, share):
    """Count by hand: sort (weight, index) pairs, take the ceil(share * n) first; the
    p-value from scipy's hypergeometric distribution."""
    n = len(log_weights)
    lowest = max(1, math.ceil(share * n - 1e-9))
    ranked = sorted(range(n), key=lambda i: (float(log_weights[i]), i))[:lowest]
    hits = sum(bool(flipped[i]) for i in ranked)
    n_flipped = int(sum(bool(f) for f in flipped))
    return lowest, hits, n_flipped, float(hypergeom.sf(hits - 1, n, n_flipped, lowest))


@pytest.mark.parametrize("share", [0.05, 0.1, 0.5])
def test_enrichment_matches_naive(seed, share):
    g = torch.Generator().manual_seed(seed)
    n = 60
    log_weights = torch.randn(n, generator=g, dtype=torch.float64).round(decimals=1)  # ties on purpose
    flipped = torch.rand(n, generator=g) < 0.2
    result = weights_study.lowest_weight_enrichment(log_weights, flipped, share)
    lowest, hits, n_flipped, p = naive_enrichment(log_weights, flipped, share)
    assert (result["lowest"], result["flipped_in_lowest"], result["n_flipped"]) == (lowest, hits, n_flipped)
    assert result["observed_share"] == hits / lowest and result["chance_share"] == n_flipped / n
    assert result["p_value"] == pytest.approx(p, rel=1e-9, abs=1e-15)
    if n_flipped:
        assert result["mean_log_weight_flipped"] == pytest.approx(float(log_weights[flipped].mean()))


@pytest.mark.parametrize("hits, population, marked, drawn", [(0, 10, 3, 4), (2, 10, 3, 4), (4, 10, 3, 4),
                                                              (27, 721, 33, 37), (3, 5, 5, 3)])
def test_hypergeometric_tail_matches_scipy(hits, population, marked, drawn):
    expected = float(hypergeom.sf(hits - 1, population, marked, drawn))
    assert weights_study.hypergeometric_tail(hits, population, marked, drawn) == pytest.approx(expected, rel=1e-9,
                                                                                              abs=1e-300)


def test_enrichment_when_flipped_weights_fall():
    log_weights = torch.zeros(100)
    flipped = torch.zeros(100, dtype=torch.bool)
    flipped[[3, 50, 97]] = True
    log_weights[flipped] = -1.0
    result = weights_study.lowest_weight_enrichment(log_weights, flipped, 0.05)
    assert result["flipped_in_lowest"] == 3 and result["observed_share"] == 0.6
    assert result["p_value"] == pytest.approx(hypergeom.sf(2, 100, 3, 5))
    assert "3 of the 100" in weights_study.describe({**result, "share": 0.05, "weight_learning_rate": 0.01})


def query_order(centres, i):
    sq = ((centres - centres[i]) ** 2).sum(1)
    sq[i] = float("inf")
    return sq.argsort()


def test_weight_gallery_rows(tmp_path, seed):
    emb = make_embeddings(tmp_path, seed=seed)
    renamed = emb.train_paths[4].replace("img_", "flipped_class_000_img_")
    os.rename(emb.train_paths[4], renamed)
    emb.train_paths[4] = renamed
    rows = weights_study.weight_gallery_rows(emb, [4, 0], k=3)
    assert len(rows) == 2 and len(rows[0].images) == 3
    assert "(flipped)" in rows[0].query_title and "(flipped)" not in rows[1].query_title
    assert f"w = {float(emb.log_weights[4].exp()):.3g}" in rows[0].query_title
    nearest = query_order(emb.train, 4)[:3]
    assert rows[0].correct == [bool(emb.train_labels[j] == emb.train_labels[4]) for j in nearest]
    assert ["(flipped)" in caption for caption in rows[1].captions] == [int(j) == 4 for j in
                                                                       query_order(emb.train, 0)[:3]]


def test_label_noise_experiment_end_to_end(tmp_path):
    data = write_tree(tmp_path / "source", num_classes=4, per_class=12)
    emb, result = weights_study.label_noise_experiment(tmp_path / "study", fraction=0.25, num_classes=2,
                                                       data_dir=str(data), max_epochs=1, **TINY)
    flipped = weights_study.is_flipped(emb.train_paths)
    assert result["n"] == len(emb.train) and result["n_flipped"] == int(flipped.sum()) > 0
    assert result == {**weights_study.lowest_weight_enrichment(emb.log_weights, flipped, 0.05), "fraction": 0.25,
                      "weight_learning_rate": 1e-2, "share": 0.05}
    assert not torch.equal(emb.log_weights, torch.zeros_like(emb.log_weights))
    again, _ = weights_study.label_noise_experiment(tmp_path / "study", fraction=0.25, num_classes=2,
                                                    data_dir=str(data), max_epochs=1, **TINY)
    assert torch.equal(again.log_weights, emb.log_weights)  # the finished run is loaded, not retrained
    with pytest.raises(ConfigError, match="other settings"):
        weights_study.label_noise_experiment(tmp_path / "study", fraction=0.1, num_classes=2, data_dir=str(data),
                                             **TINY)
    for c in range(4):  # the source's folders renamed, as the digits' were: the flipped copy and its run are redone
        (data / f"class_{c:03d}").rename(data / f"digit_{c}")
    renamed, _ = weights_study.label_noise_experiment(tmp_path / "study", fraction=0.25, num_classes=2,
                                                      data_dir=str(data), max_epochs=1, **TINY)
    assert renamed.class_names == [f"digit_{c}" for c in range(4)]
    assert all(os.path.exists(p) for p in renamed.train_paths + renamed.heldout_paths)  # no link into a lost folder
    assert (tmp_path / "study" / "run-old-classes").is_dir()
