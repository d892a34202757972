"""explore.validation_sweep: a setting chosen on validation classes, the held-out ones never read."""

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from nngk_lab import explore
from nngk_lab.data import folders
from nngk_lab.errors import ConfigError, DataError
from nngk_lab.evaluation.embeddings import split_embeddings
from nngk_lab.explore import validation
from nngk_lab.training.config import digits_defaults

from tiny_runs import TINY, write_tree

CLASSES = [f"class_{c:03d}" for c in range(6)]


def naive_scores(features, labels):
    """Recall@1 and MAP@R by their definitions, in float64, one query at a time."""
    x = features.double()
    hits, maps = [], []
    for i in range(len(x)):
        d = ((x - x[i]) ** 2).sum(1)
        d[i] = float("inf")
        order = sorted(range(len(x)), key=lambda j: (float(d[j]), j))[:-1]  # every other item, nearest first
        same = [int(labels[j] == labels[i]) for j in order]
        r = int((labels == labels[i]).sum()) - 1
        hits.append(same[0])
        maps.append(sum(sum(same[:n]) / n * same[n - 1] for n in range(1, r + 1)) / r)
    return sum(hits) / len(hits), sum(maps) / len(maps)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("tree") / "data", num_classes=6, per_class=10)


@pytest.fixture(scope="module")
def swept(tree, tmp_path_factory):
    """A sweep of K over two values and two seeds: trained on classes 0-1 of the first
    four, scored among 2-3; every folder listed and every image opened is recorded."""
    root = tmp_path_factory.mktemp("sweep")
    listed, opened = [], []
    list_folder, image_open = folders._list_folder, Image.open

    def spy_list(folder):
        listed.append(Path(folder).resolve())
        return list_folder(folder)

    def spy_open(path, *args, **kwargs):
        opened.append(Path(path).resolve())
        return image_open(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(folders, "_list_folder", spy_list)
        mp.setattr(Image, "open", spy_open)
        result = explore.validation_sweep("num_neighbours", [2, 5], root, first_classes=4, num_classes=2,
                                          seeds=(0, 1), **{**TINY, "data_dir": str(tree), "max_epochs": 1})
    return {"root": root, "result": result, "listed": listed, "opened": opened}


def test_the_runs_read_only_the_first_classes(swept, tree):
    opened = {p.parent.name for p in swept["opened"]}
    assert opened == set(CLASSES[:4]), "every image read is of the first four classes, and all of them were read"
    # The tree itself is listed (to find its first classes), but no later class folder is even listed.
    listed = {p.name for p in swept["listed"] if p.parent == tree.resolve()}
    assert listed == set(CLASSES[:4])
    result = swept["result"]
    assert (result["trained_classes"], result["validation_classes"]) == (CLASSES[:2], CLASSES[2:4])


def test_scores_are_those_of_each_runs_embeddings(swept):
    result, root = swept["result"], swept["root"]
    assert (result["values"], result["seeds"], result["epochs"]) == ([2, 5], [0, 1], 1)
    for i, k in enumerate(result["values"]):
        for j, seed in enumerate(result["seeds"]):
            run = root / "runs" / f"num_neighbours-{k}-seed{seed}"
            assert (run / "config.json").is_file()
            heldout = split_embeddings(run, "heldout")
            assert sorted(set(heldout.labels.tolist())) == [2, 3]  # the validation classes only
            recall, map_r = naive_scores(heldout.features, heldout.labels)
            assert result["recall@1"][i][j] == pytest.approx(recall, abs=1e-9)
            assert result["map@r"][i][j] == pytest.approx(map_r, abs=1e-9)
            untrained = explore.untrained_embeddings(run)["heldout"]
            recall, map_r = naive_scores(untrained, heldout.labels)
            assert result["untrained"]["recall@1"][i][j] == pytest.approx(recall, abs=1e-9)
            assert result["untrained"]["map@r"][i][j] == pytest.approx(map_r, abs=1e-9)
    # K does not change the network a run starts from; the seed does.
    start = {(k, seed): explore.untrained_embeddings(root / "runs" / f"num_neighbours-{k}-seed{seed}")["heldout"]
             for k in result["values"] for seed in result["seeds"]}
    assert torch.equal(start[2, 0], start[5, 0]) and not torch.equal(start[2, 0], start[2, 1])


def test_a_cached_sweep_trains_nothing_and_another_key_trains_again(swept, tree, monkeypatch, tmp_path):
    copy = shutil.copytree(swept["root"], tmp_path / "copy", symlinks=True)  # the other tests keep theirs
    calls = []

    def no_training(config, resume=False):
        calls.append(config)
        raise AssertionError("trained although the sweep was cached")

    monkeypatch.setattr(validation, "train", no_training)
    settings = {**TINY, "data_dir": str(tree), "max_epochs": 1}
    again = explore.validation_sweep("num_neighbours", [2, 5], swept["root"], first_classes=4, num_classes=2,
                                     seeds=(0, 1), **settings)
    assert again == swept["result"] and not calls
    with pytest.raises(AssertionError, match="although"):  # another seed list is another sweep
        explore.validation_sweep("num_neighbours", [2, 5], copy, first_classes=4, num_classes=2,
                                 seeds=(0,), **settings)
    assert calls and calls[0].num_neighbours == 2 and calls[0].seed == 0


def test_bad_requests_are_refused_in_one_sentence(tree, tmp_path):
    settings = {**TINY, "data_dir": str(tree)}
    for kwargs, words in ((dict(first_classes=4, num_classes=3), "between 2 and first_classes - 2 = 2; got 3"),
                          (dict(first_classes=5, num_classes=1), "between 2 and first_classes - 2 = 3; got 1")):
        with pytest.raises(ConfigError, match=words):
            explore.validation_sweep("num_neighbours", [2], tmp_path / "a", **kwargs, **settings)
    with pytest.raises(ConfigError, match="fixed by the validation protocol"):
        explore.validation_sweep("seed", [0, 1], tmp_path / "b", 4, 2, **settings)
    with pytest.raises(ConfigError, match="at least one value"):
        explore.validation_sweep("num_neighbours", [], tmp_path / "c", 4, 2, **settings)
    with pytest.raises(DataError, match="2 to 6 classes"):
        explore.validation_sweep("num_neighbours", [2], tmp_path / "d", 7, 2, **settings)
    (tmp_path / "mine" / "runs").mkdir(parents=True)  # someone else's folder: its runs are not deleted
    with pytest.raises(ConfigError, match="a folder of its own"):
        explore.validation_sweep("num_neighbours", [2], tmp_path / "mine", 4, 2, **settings)
    assert (tmp_path / "mine" / "runs").is_dir()


def test_subset_settings_write_the_digits_defaults_out(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(validation, "export_digits", lambda: tree)  # stands in for the embedded digits
    settings = explore.subset_settings({"max_epochs": 3, "sigma": None}, 5, tmp_path / "subset")
    assert {k: settings[k] for k in digits_defaults()} == digits_defaults()
    assert settings["max_epochs"] == 3 and "sigma" in settings and settings["sigma"] == digits_defaults()["sigma"]
    assert sorted(p.name for p in Path(settings["data_dir"]).iterdir()) == CLASSES[:5]
    given = explore.subset_settings({"data_dir": str(tree), "sigma": 0.5}, 3, tmp_path / "own")
    assert given["sigma"] == 0.5 and "normalise" not in given  # a tree of one's own gets no digits defaults
    assert torch.equal(torch.tensor([p.is_symlink() for p in Path(given["data_dir"]).iterdir()]),
                       torch.ones(3, dtype=torch.bool))


def test_validation_text_gives_every_runs_numbers(swept):
    result = swept["result"]
    lines = explore.validation_text(result).splitlines()
    assert lines[0].startswith("trained on class_000, class_001; retrieval among class_002, class_003; 1 epochs")
    for i, k in enumerate(result["values"]):
        line = lines[1 + i]
        assert line.startswith(f"num_neighbours = {k}: ")
        for name, row in (("Recall@1", result["recall@1"][i]), ("MAP@R", result["map@r"][i]),
                          ("untrained network: MAP@R", result["untrained"]["map@r"][i])):
            assert f"{name} {' '.join(f'{v:.3f}' for v in row)}" in line
    assert len(lines) == 1 + len(result["values"])
