"""Networks: the backbones (ResNet18, a small CNN) and the pytorch-metric-learning
losses the kit compares the kernel loss with."""

from .backbones import EmbeddingNet, build_model, imagenet_weights_path
from .baselines import BaselineLoss, in_batch_nearest_neighbour, pair_members, pml_parts
