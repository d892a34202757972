"""The method itself: the Gaussian-kernel loss (plain PyTorch and fused Triton), the
feature bank, the exact neighbour search, the kernel and 1-NN classifiers, and
:class:`NNGKLoss`, all of it as one loss module for any training loop."""

from .bank import embed, embed_shared, FeatureBank
from .classify import kernel_predict_log_probs, nearest_neighbour_predict, accuracy, classification_metrics
from .fused_loss import interpreting, fused_kernel_nll, fused_loss_usable
from .loss import (check_loss_inputs, neighbour_logits, class_log_probs, true_class_log_prob, kernel_log_probs,
    KernelLoss, kernel_nll, kernel_nll_with_batch, KernelWeights)
from .nngk_loss import BanklessLoss, NNGKLoss, WithIndex
from .search import (auto_chunk_rows, nearest_neighbours, torch_search, smallest, drop_self, faiss_search,
    time_backends)
from .search_choice import (choose_backend, cached_choice, rule_backend, machine_key, cache_dir, read_cache,
    write_cache)
