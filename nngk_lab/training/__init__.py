"""A run: its settings, data loaders, trainable parts, one step, its folder and
checkpoints, the training loop, interrupts and torchrun."""

from .config import TrainConfig, digits_defaults, make_config, config_from_dict, default_text
from .loaders import (load_split, no_heldout_warning, EpochOrder, make_loader, RunImages, resize_size, fits_in_memory,
    eval_loaders)
from .loop import TrainResult, train
from .parts import Parts, build_parts, build_initial_parts
from .runs import (Progress, check_save_dir, run_lock, data_fingerprint, read_checkpoint, resumed_config,
    check_same_data, restore, check_finite, save_checkpoint, saved_evaluation, LoadedRun, check_run_data, load_run)
from .step import StepResult, TrainStep, add_to_sums
