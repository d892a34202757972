"""Backbones that map an image to an embedding: ResNet18 (512-d, the original's) and a
small CNN that trains in minutes on a laptop CPU."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from ..errors import ConfigError, first_line

MODEL_NAMES = ("resnet18", "small_cnn")


def imagenet_weights_path() -> Path:
    """Where torchvision would cache ResNet18's ImageNet weights on this machine."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)


class _BlockWithoutFinalReLU(nn.Module):
    """A ResNet BasicBlock whose output skips the ReLU after the residual sum."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x):
        b = self.block
        identity = x if b.downsample is None else b.downsample(x)
        out = b.relu(b.bn1(b.conv1(x)))
        return b.bn2(b.conv2(out)) + identity


class EmbeddingNet(nn.Module):
    """A trunk producing pooled features, then optional dropout and a linear head.

    ``freeze_bn`` keeps BatchNorm layers in eval mode (running statistics fixed) even
    while the rest trains, as the original did with its ImageNet-initialised ResNet18.
    ``normalise`` scales every embedding to unit length, so squared distances lie in [0, 4].
    """

    def __init__(self, trunk: nn.Module, trunk_dim: int, embedding_dim: int | None = None,
                 dropout: float = 0.0, freeze_bn: bool = False, normalise: bool = False):
        super().__init__()
        self.normalise = normalise
        self.trunk = trunk
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(trunk_dim, embedding_dim) if embedding_dim else nn.Identity()
        self.embedding_dim = embedding_dim or trunk_dim
        self.freeze_bn = freeze_bn

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Channels-last is the layout oneDNN's and cuDNN's convolutions prefer; a no-op for
        # images already in it.
        images = images.contiguous(memory_format=torch.channels_last)
        embedding = self.head(self.dropout(self.trunk(images)))
        return nn.functional.normalize(embedding, dim=1) if self.normalise else embedding

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def _resnet18_trunk(pretrained: str, final_relu: bool) -> nn.Module:
    net = resnet18(weights=None)
    if pretrained != "none":
        path = imagenet_weights_path() if pretrained == "auto" else Path(pretrained)
        if path.is_file():
            try:
                net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            except Exception as e:  # torch raises many types for foreign or truncated files
                raise ConfigError(f"--pretrained file {path} is not a ResNet18 state dict: "
                                  f"{first_line(e)}") from e
        elif pretrained == "auto":
            warnings.warn(
                f"ImageNet weights for ResNet18 were not found at {path}, so the network starts "
                "from random initialisation (nothing is downloaded). To use them, copy "
                f"{os.path.basename(path)} (torchvision's ResNet18_Weights.IMAGENET1K_V1) there "
                "or pass its path with --pretrained.", stacklevel=3)
        else:
            raise ConfigError(f"--pretrained file {path} does not exist")
    net.fc = nn.Identity()
    if not final_relu:
        net.layer4[-1] = _BlockWithoutFinalReLU(net.layer4[-1])
    return net


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _small_cnn_trunk(width: int, final_relu: bool) -> nn.Module:
    layers = [*_conv_block(3, width), *_conv_block(width, width), nn.MaxPool2d(2),
              *_conv_block(width, 2 * width), *_conv_block(2 * width, 2 * width), nn.MaxPool2d(2),
              *_conv_block(2 * width, 4 * width)]
    if not final_relu:
        layers.pop()
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def build_model(name: str = "resnet18", *, embedding_dim: int | None = None, final_relu: bool | None = None,
                dropout: float = 0.0, pretrained: str = "auto", freeze_bn: bool | None = None,
                width: int = 32, normalise: bool = False) -> EmbeddingNet:
    """Build an embedding network.

    - ``resnet18``: torchvision ResNet18 without its fc layer, 512-d output after the
      final ReLU (as in the original). ImageNet weights are loaded only when already on
      disk (``pretrained="auto"``, see :func:`imagenet_weights_path`), or from a path;
      ``"none"`` forces random initialisation. BatchNorm is frozen by default.
    - ``small_cnn``: five 3x3 conv layers (``width``, 2x, 4x channels) and global average
      pooling; output ``4 * width`` dims. Trains BatchNorm by default.

    ``final_relu`` defaults to True for ResNet18 and False for the small CNN;
    ``embedding_dim`` adds a linear head; ``dropout`` goes before that head;
    ``normalise`` L2-normalises the output.
    """
    if name == "resnet18":
        final_relu = True if final_relu is None else final_relu
        trunk, trunk_dim = _resnet18_trunk(pretrained, final_relu), 512
        freeze_bn = True if freeze_bn is None else freeze_bn
    elif name == "small_cnn":
        final_relu = False if final_relu is None else final_relu
        trunk, trunk_dim = _small_cnn_trunk(width, final_relu), 4 * width
        freeze_bn = False if freeze_bn is None else freeze_bn
    else:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return EmbeddingNet(trunk, trunk_dim, embedding_dim, dropout, freeze_bn, normalise)
