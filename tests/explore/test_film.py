"""The embedding film: a 2-D run trained one epoch at a time, each epoch's centres
cached; and its figures."""

import shutil

import pytest
import torch
from matplotlib.figure import Figure

from nngk_lab.explore import film as embedding_film
from nngk_lab.viz import film as viz_film
from nngk_lab.errors import CheckpointError
from nngk_lab.training.config import make_config
from nngk_lab.training.runs import load_run
from nngk_lab.training.loop import train
from tiny_runs import TINY, write_tree


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("film")
    data = write_tree(tmp / "data", num_classes=4, per_class=12)
    return tmp, {loss: embedding_film.train_film(tmp / loss, 2, data_dir=str(data), num_classes=2, loss=loss,
                                                 **TINY)
                 for loss in embedding_film.FILM_LOSSES}


def test_film_holds_every_epochs_centres(films):
    tmp, result = films
    for loss, film in result.items():
        assert film["centres"].shape == (3, 20, 2) and film["labels"].shape == (20,)
        assert film["loss"] == loss and len(film["accuracy"]) == 3 and film["num_trained"] == 2
        run = load_run(tmp / loss)
        assert run.config.embedding_dim == 2 and len(run.history) == 2
        torch.testing.assert_close(film["centres"][-1], run.bank.features)
        assert not torch.equal(film["centres"][0], film["centres"][-1])
    assert result["softmax"]["accuracy"][-1] == pytest.approx(load_run(tmp / "softmax").history[-1]["softmax_accuracy"])


def test_film_epochs_match_an_uninterrupted_run(films):
    """Training epoch by epoch through resume gives the same centres as one run."""
    tmp, result = films
    config = make_config(save_dir=str(tmp / "straight"), max_epochs=2, data_dir=str(tmp / "data"), num_classes=2,
                         loss="nngk", embedding_dim=2, **TINY)
    straight = train(config)
    torch.testing.assert_close(result["nngk"]["centres"][-1], straight.bank.features)


def test_film_is_read_back_from_its_cache(films, monkeypatch):
    tmp, result = films

    def no_training(*args, **kwargs):
        raise AssertionError("a cached film was trained again")

    monkeypatch.setattr(embedding_film, "train", no_training)
    again = embedding_film.train_film(tmp / "nngk", 2, data_dir=str(tmp / "data"), num_classes=2, loss="nngk", **TINY)
    assert torch.equal(again["centres"], result["nngk"]["centres"])


def test_film_missing_an_epoch_says_what_to_do(films, tmp_path):
    tmp, _ = films
    shutil.copytree(tmp / "nngk", tmp_path / "nngk")
    (tmp_path / "nngk" / "centres-epoch-001.pt").unlink()
    with pytest.raises(CheckpointError, match="delete that folder"):
        embedding_film.train_film(tmp_path / "nngk", 2, data_dir=str(tmp / "data"), num_classes=2, loss="nngk", **TINY)


def test_a_film_of_renamed_class_folders_is_trained_again(films, tmp_path):
    tmp, result = films
    shutil.copytree(tmp / "data", tmp_path / "data")
    shutil.copytree(tmp / "nngk", tmp_path / "nngk")
    for c in range(4):  # as the digits' folders were renamed: the cached epochs name the old classes
        (tmp_path / "data" / f"class_{c:03d}").rename(tmp_path / "data" / f"digit_{c}")
    again = embedding_film.train_film(tmp_path / "nngk", 2, data_dir=str(tmp_path / "data"), num_classes=2,
                                      loss="nngk", **TINY)
    assert again["classes"] == [f"digit_{c}" for c in range(4)]
    torch.testing.assert_close(again["centres"], result["nngk"]["centres"])  # same images, same order
    assert (tmp_path / "nngk-old-classes" / "centres-epoch-002.pt").is_file()


def test_film_folders(monkeypatch, tmp_path):
    monkeypatch.setenv("NNGK_RUNS", str(tmp_path))
    monkeypatch.setenv("NNGK_FAST", "1")
    assert embedding_film.film_dir("softmax") == tmp_path / "digits-fast-film-softmax"
    monkeypatch.setenv("NNGK_FAST", "0")
    assert embedding_film.film_dir("nngk") == tmp_path / "digits-film-nngk"


def test_film_figures(films):
    _, result = films
    fig = viz_film.film_snapshots(result)
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.collections]) == 6
    html = viz_film.film_animation_html(result, interval_ms=100)
    assert "<script" in html and html.count("data:image/png;base64") >= 3


def test_film_on_the_digits_trains_an_unnormalised_plane(monkeypatch, tmp_path):
    """Unit-length 2-D embeddings would lie on a circle: the digits' film leaves NNGK's
    digits defaults (unit length, sigma 0.2) for the plane at the small CNN's sigma."""
    seen = []

    def record(run_dir, epoch, device, config):
        seen.append(make_config(save_dir=str(run_dir), max_epochs=epoch, **config))
        return {"centres": torch.zeros(3, 2), "labels": torch.zeros(3, dtype=torch.long), "evaluation": {},
                "classes": ["0"], "num_trained": 1}

    monkeypatch.setattr(embedding_film, "_train_to_epoch", record)
    embedding_film.train_film(tmp_path / "film", 1, loss="nngk")
    assert make_config().normalise and make_config().sigma == 0.2  # what the film leaves
    assert seen and all(not c.normalise and c.sigma == 1.0 and c.embedding_dim == 2 for c in seen)
    embedding_film.train_film(tmp_path / "film-sigma", 1, loss="nngk", sigma=0.5)
    assert seen[-1].sigma == 0.5  # a sigma the caller gives is kept
