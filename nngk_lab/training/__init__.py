"""A run: its settings, data loaders, trainable parts, one step, its folder and
checkpoints, the training loop, interrupts and torchrun."""

from .config import TrainConfig, config_from_dict, default_text, digits_defaults, make_config
from .loaders import (
    EpochOrder,
    RunImages,
    eval_loaders,
    fits_in_memory,
    load_split,
    make_loader,
    no_heldout_warning,
    resize_size,
)
from .loop import TrainResult, train
from .parts import Parts, build_initial_parts, build_parts
from .runs import (
    LoadedRun,
    Progress,
    check_finite,
    check_run_data,
    check_same_data,
    check_save_dir,
    data_fingerprint,
    load_run,
    read_checkpoint,
    restore,
    resumed_config,
    run_lock,
    save_checkpoint,
    saved_evaluation,
)
from .step import StepResult, TrainStep, add_to_sums
