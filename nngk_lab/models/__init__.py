"""Networks: the backbones (ResNet18, a small CNN) and the pytorch-metric-learning
losses the kit compares the kernel loss with."""

from .backbones import imagenet_weights_path, EmbeddingNet, build_model
from .baselines import pml_parts, in_batch_nearest_neighbour, pair_members, BaselineLoss
