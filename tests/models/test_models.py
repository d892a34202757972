"""nngk_lab.models: output sizes, the final ReLU, frozen BatchNorm, and ImageNet weights that
are only ever read from disk."""

import warnings

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import resnet18

from nngk_lab.errors import ConfigError
from nngk_lab.models.backbones import build_model, imagenet_weights_path


def _embed(model, size, batch=2):
    with torch.no_grad():
        return model(torch.randn(batch, 3, size, size))


@pytest.mark.parametrize("name,kwargs,size,dim", [
    ("resnet18", dict(pretrained="none"), 16, 512),
    ("resnet18", dict(pretrained="none", embedding_dim=10), 16, 10),
    ("small_cnn", dict(width=8), 16, 32),
    ("small_cnn", dict(width=5), 12, 20),
    ("small_cnn", dict(width=8, embedding_dim=7, dropout=0.3), 16, 7),
])
def test_output_dims(name, kwargs, size, dim, seed):
    model = build_model(name, **kwargs).eval()
    assert model.embedding_dim == dim
    out = _embed(model, size)
    assert out.shape == (2, dim) and torch.isfinite(out).all()


@pytest.mark.parametrize("name,kwargs,size,final_relu", [
    ("resnet18", dict(pretrained="none"), 16, True),          # the original's default
    ("resnet18", dict(pretrained="none", final_relu=False), 16, False),
    ("small_cnn", dict(width=8), 16, False),                  # the small CNN's default
    ("small_cnn", dict(width=8, final_relu=True), 16, True),
])
def test_final_relu(name, kwargs, size, final_relu, seed):
    model = build_model(name, **kwargs)
    for mode in (True, False):
        out = _embed(model.train(mode), size)
        if final_relu:
            assert (out >= 0).all(), f"seed={seed}"
        else:  # about a quarter of the outputs are negative at random initialisation
            assert (out < 0).any(), f"seed={seed}"


def _batchnorms(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("name,kwargs,size,frozen", [
    ("resnet18", dict(pretrained="none"), 16, True),
    ("resnet18", dict(pretrained="none", freeze_bn=False), 16, False),
    ("small_cnn", dict(width=8), 16, False),
    ("small_cnn", dict(width=8, freeze_bn=True), 16, True),
])
def test_freeze_bn_keeps_batchnorm_in_eval_while_training(name, kwargs, size, frozen):
    model = build_model(name, **kwargs).train()
    assert model.training
    batchnorms = _batchnorms(model)
    assert batchnorms and all(bn.training != frozen for bn in batchnorms)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.training for c in convs)
    before = [bn.running_mean.clone() for bn in batchnorms]
    model(torch.randn(2, 3, size, size) * 3 + 1)
    unchanged = all(torch.equal(b, bn.running_mean) for b, bn in zip(before, batchnorms))
    assert unchanged == frozen
    model.eval()
    assert not any(bn.training for bn in batchnorms)
    model.train()
    assert all(bn.training != frozen for bn in batchnorms)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """torch.hub looks in an empty folder, and any attempt to download fails the test."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def no_download(*args, **kwargs):
        raise AssertionError("nothing may be downloaded")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_download, raising=False)
    return home


def test_missing_imagenet_weights_warn_and_start_random(empty_torch_home):
    path = imagenet_weights_path()
    assert path.is_relative_to(empty_torch_home) and path.name.startswith("resnet18")
    with pytest.warns(UserWarning, match="not found") as record:
        first = build_model("resnet18")
    assert str(path) in str(record[0].message)
    with pytest.warns(UserWarning):
        second = build_model("resnet18")
    # Random initialisation: two builds differ.
    assert not torch.equal(first.trunk.conv1.weight, second.trunk.conv1.weight)
    assert not empty_torch_home.exists() or not any(empty_torch_home.rglob("*"))


def test_imagenet_weights_are_read_from_disk(empty_torch_home, tmp_path):
    reference = resnet18(weights=None)
    path = imagenet_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auto = build_model("resnet18")
    assert torch.equal(auto.trunk.conv1.weight, reference.conv1.weight)
    assert torch.equal(auto.trunk.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    explicit = build_model("resnet18", pretrained=str(path), final_relu=False)
    assert torch.equal(explicit.trunk.layer4[1].block.conv2.weight, reference.layer4[1].conv2.weight)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_model("resnet18", pretrained="none")


def test_bad_model_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg")
    with pytest.raises(ConfigError, match="weights.pth does not exist"):
        build_model("resnet18", pretrained=str(tmp_path / "weights.pth"))
    (tmp_path / "garbage.pth").write_bytes(b"not weights")
    with pytest.raises(ConfigError, match="garbage.pth is not a ResNet18 state dict"):
        build_model("resnet18", pretrained=str(tmp_path / "garbage.pth"))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="other.pth is not a ResNet18 state dict"):
        build_model("resnet18", pretrained=str(tmp_path / "other.pth"))


def test_normalised_embeddings_are_the_plain_ones_scaled_to_unit_length(seed):
    images = torch.randn(5, 3, 16, 16) * 10
    torch.manual_seed(seed)
    plain = build_model("small_cnn", pretrained="none").eval()
    torch.manual_seed(seed)
    unit = build_model("small_cnn", pretrained="none", normalise=True).eval()
    with torch.no_grad():
        a, b = plain(images).double(), unit(images).double()
    assert torch.allclose(b.norm(dim=1), torch.ones(5, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(b, a / a.norm(dim=1, keepdim=True), atol=1e-6)
