"""nngk_lab: deep metric learning and classification with nearest neighbour Gaussian
kernels (Meyer, Harwood, Drummond, ICIP 2018), for notebooks and the command line.

Subpackages, lowest first; each imports only from those before it:

- ``errors``, ``device``, ``files``, ``progress``: exceptions, devices and threads,
  atomic files, progress bars;
- ``data``: class-folder trees, splits, transforms, decoding, samplers, the releases;
- ``distributed``: torchrun's processes, and sharding a pass over the data among them;
- ``kernel``: the loss (plain and fused), the feature bank, the search, the classifiers;
- ``models``: backbones and the pytorch-metric-learning baselines;
- ``training``: a run's settings, loaders, step, folder and checkpoints, the loop;
- ``evaluation``: metrics, evaluating and comparing runs, time-to-accuracy;
- ``explore``, ``viz``, ``widgets``: what the notebooks compute, draw and slide.

The command lines (``python -m nngk_lab.train``, ``evaluate``, ``compare``, ``datasets``,
``weights_study``) sit on top; nothing in the package imports them.

The names below are what a training loop of your own needs: :class:`NNGKLoss` is the
method as one loss module (its bank, neighbour lists and kernel weights inside), and
:class:`WithIndex` gives a dataset the image indices it is called with, and
:class:`BanklessLoss` gives a pytorch-metric-learning loss the same calls.
"""

from .evaluation.metrics import map_at_r, recall_at_k
from .kernel.bank import FeatureBank
from .kernel.loss import KernelWeights, kernel_nll
from .kernel.nngk_loss import BanklessLoss, NNGKLoss, WithIndex
from .kernel.search import nearest_neighbours
from .models.backbones import build_model

__version__ = "0.1.0"
__all__ = ["BanklessLoss", "FeatureBank", "KernelWeights", "NNGKLoss", "WithIndex", "build_model", "kernel_nll",
           "map_at_r", "nearest_neighbours", "recall_at_k"]
