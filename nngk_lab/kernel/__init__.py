"""The method itself: the Gaussian-kernel loss (plain PyTorch and fused Triton), the
feature bank, the exact neighbour search, the kernel and 1-NN classifiers, and
:class:`NNGKLoss`, all of it as one loss module for any training loop."""

from .bank import FeatureBank, embed, embed_shared
from .classify import accuracy, classification_metrics, kernel_predict_log_probs, nearest_neighbour_predict
from .fused_loss import fused_kernel_nll, fused_loss_usable, interpreting
from .loss import (
    KernelLoss,
    KernelWeights,
    check_loss_inputs,
    class_log_probs,
    kernel_log_probs,
    kernel_nll,
    kernel_nll_with_batch,
    neighbour_logits,
    true_class_log_prob,
)
from .nngk_loss import BanklessLoss, NNGKLoss, WithIndex
from .search import auto_chunk_rows, drop_self, faiss_search, nearest_neighbours, smallest, time_backends, torch_search
from .search_choice import cache_dir, cached_choice, choose_backend, machine_key, read_cache, rule_backend, write_cache
