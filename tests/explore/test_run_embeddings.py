"""The notebooks' embeddings of a run (explore.run_embeddings, untrained_embeddings) embed
it as evaluate_run does: a stopped run's stale bank is embedded again, and a data folder
whose images are not the run's is refused."""

import shutil

import pytest
import torch

from nngk_lab.errors import CheckpointError
from nngk_lab.evaluation.embeddings import split_embeddings
from nngk_lab.explore.embeddings import run_embeddings, untrained_embeddings
from nngk_lab.files import atomic_save, safe_load
from nngk_lab.training.config import make_config
from nngk_lab.training.loop import train
from nngk_lab.training.runs import CHECKPOINT_KIND, CHECKPOINT_NAME

from tiny_runs import TINY, write_tree


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tree = write_tree(tmp_path_factory.mktemp("tree"))
    save_dir = tmp_path_factory.mktemp("runs") / "nngk"
    train(make_config(data_dir=str(tree), save_dir=str(save_dir), **TINY, max_epochs=2))
    return tree, save_dir


def _stopped(save_dir, where, data_dir=None):
    """The run as if stopped before it finished, its bank stale (zero), optionally moved to
    another data folder."""
    state = safe_load(save_dir / CHECKPOINT_NAME, CHECKPOINT_KIND)
    state["bank"] = {**state["bank"], "features": torch.zeros_like(state["bank"]["features"])}
    state["finished"], state["eval_bank"] = False, None
    if data_dir is not None:
        state["config"] = {**state["config"], "data_dir": str(data_dir)}
    atomic_save(state, where / CHECKPOINT_NAME)
    return where


def test_a_stopped_run_is_embedded_as_evaluate_embeds_it(run, tmp_path):
    _, save_dir = run
    emb = run_embeddings(_stopped(save_dir, tmp_path / "stopped"))
    assert not torch.equal(emb.train, torch.zeros_like(emb.train))  # not the stale bank
    expected = split_embeddings(save_dir, "train")  # the finished run's final bank
    assert torch.allclose(emb.train, expected.features.cpu(), atol=1e-5)
    assert torch.equal(emb.train_labels, expected.labels.cpu())
    assert torch.allclose(emb.heldout, split_embeddings(save_dir, "heldout").features.cpu(), atol=1e-5)


def test_images_that_are_not_the_runs_are_refused(run, tmp_path):
    tree, save_dir = run
    changed = shutil.copytree(tree, tmp_path / "changed")
    (changed / "class_003" / "im_00.png").unlink()  # a held-out image: the bank's size is unchanged
    for function in (run_embeddings, untrained_embeddings):
        copy = _stopped(save_dir, tmp_path / function.__name__, data_dir=changed)
        with pytest.raises(CheckpointError, match="are not those .* was trained on"):
            function(copy)
