"""A run's settings as a table a student can read: each value with one reason.

Where a value is the embedded digits' default, the reason says why the digits got it
(how it was chosen); any other value gets the setting's own help text, the one
``python -m nngk_lab.train --help`` prints.
"""

from __future__ import annotations

import dataclasses

from ..training.config import TrainConfig, make_config

# Why the digits run has each value (config.py's comments and docs/results.md, "Results on the
# embedded digits", say how each was chosen).
DIGITS_REASONS = {
    "model": ("small_cnn", "a small CNN trains the digits in about a minute on a CPU; the paper used "
                           "ResNet18 with ImageNet weights on photos"),
    "input_size": (32, "the 8x8 digits are resized to 36 px and cropped to 32, room for the random crop"),
    "hflip": (False, "no mirrored training images: a mirrored 2 is not a 2"),
    "normalise": (True, "unit-length embeddings: squared distances lie in [0, 4], so sigma acts as a "
                        "temperature; unnormalised, the loss reached about 0 by moving the classes apart"),
    "sigma": (0.2, "chosen on validation classes (train digits 0-2, retrieve 3-4): of 0.2, 0.3 and 0.5 it "
                   "raised MAP@R most"),
    "num_neighbours": (20, "chosen on validation classes; the original's K = 200 covers over a quarter of "
                           "this small bank and made held-out retrieval worse"),
    "batch_size": (64, "the small CNN's batch: 12 steps per epoch on the 721 training digits"),
    "learning_rate": (1e-4, "Adam; on validation classes it kept a slightly higher Recall@1 and MAP@R than "
                            "the photo recipe (3e-4 with centres updated every step)"),
    "update_interval": (1, "refresh the bank before every epoch: on 721 small images a refresh is cheap"),
    "centres": ("paper", "every centre recomputed at each refresh, as in the paper"),
    "max_epochs": (10, "held-out retrieval on the validation classes was best around epoch 10"),
}
SHOWN = ("model", "input_size", "hflip", "normalise", "sigma", "num_neighbours", "batch_size", "learning_rate",
         "weight_learning_rate", "update_interval", "centres", "max_epochs", "max_time")


def settings_rows(config: TrainConfig | dict) -> list[tuple[str, str, str]]:
    """``(setting, value, reason)`` for the settings a student should know, from a
    :class:`TrainConfig` or from :func:`make_config` settings."""
    config = make_config(**config) if isinstance(config, dict) else config
    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(TrainConfig)}
    digits = config.data_dir is None
    rows = []
    for name in SHOWN:
        value = getattr(config, name)
        if value is None:
            continue
        known = DIGITS_REASONS.get(name)
        reason = known[1] if digits and known is not None and known[0] == value else helps[name]
        rows.append((name, f"{value:g}" if isinstance(value, float) else str(value), reason))
    return rows


def settings_table(config: TrainConfig | dict) -> str:
    """:func:`settings_rows` as a Markdown table (show it with ``IPython.display.Markdown``)."""
    lines = ["| setting | value | why |", "|---|---|---|"]
    lines += [f"| `{name}` | {value} | {reason} |" for name, value, reason in settings_rows(config)]
    return "\n".join(lines)
