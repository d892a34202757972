"""A run's settings: :class:`TrainConfig`, its defaults per model and for the digits, and
their validation. The command line (:mod:`nngk_lab.training.flags`) is built from the fields' help.

Defaults come in three layers, each overriding the one before:

1. :class:`TrainConfig`'s own field defaults (model-independent settings);
2. :data:`MODEL_DEFAULTS` of the chosen ``model``: ResNet18 keeps the original's
   (Meyer et al.'s train.py, ImageNet-sized photos on a GPU), the small CNN has a recipe
   for small images on a CPU;
3. :func:`digits_defaults` when no ``data_dir`` is given (the embedded 8x8 digits):
   :data:`DIGITS_DEFAULTS` for every loss, and :data:`DIGITS_NNGK_DEFAULTS` for NNGK's.

:func:`make_config` applies them and resolves every "automatic" value, so a run's
``config.json`` records each value it used.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from ..data.samplers import SAMPLERS
from ..device import default_workers
from ..errors import ConfigError
from ..models.backbones import MODEL_NAMES
from ..models.baselines import MINED_LOSSES, PML_LOSSES

LOSSES = ("nngk", "softmax", *PML_LOSSES)
CENTRE_SCHEMES = ("paper", "online")


def _f(default, help: str, **metadata):
    """A dataclass field whose help text the command line shows."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class TrainConfig:
    """All settings of a run. Construct it with :func:`make_config`, which fills in the
    model's and the digits' defaults; the field defaults here are ResNet18's."""

    data_dir: str | None = _f(None, "parent folder of class sub-folders (class_000/, class_001/, ...); "
                                    "default: the embedded digits, with the small CNN")
    save_dir: str = _f("runs/digits", "folder for the checkpoint, config, history and evaluation")
    num_classes: int | None = _f(None, "train on the first N classes (sorted folder names); the rest are held "
                                       "out for retrieval. Default: the first half (at least 2)")
    test_fraction: float = _f(0.2, "share of each trained class kept as test images")
    im_ext: str | None = _f(None, "only use image files with this extension, e.g. jpg (default: all common "
                                  "types)")
    model: str = _f("resnet18", "backbone; the defaults marked 'for resnet18' and 'for small_cnn' follow it", choices=MODEL_NAMES)
    pretrained: str = _f("auto", "ResNet18 weights: auto (ImageNet if already on disk), none, or a file path; "
                                 "the small CNN has none")
    final_relu: bool | None = _f(None, "keep the ReLU at the end of the backbone")
    dropout: float = _f(0.0, "dropout before the embedding head")
    normalise: bool = _f(False, "scale every embedding to unit length: squared distances lie in [0, 4], so sigma "
                                "acts as a temperature")
    embedding_dim: int | None = _f(None, "add a linear layer to this many dimensions (default: none, the "
                                         "backbone's own output)")
    loss: str = _f("nngk", "nngk (the method), or a baseline: softmax (a linear head), or pytorch-metric-"
                           "learning's nca, proxy_nca, multi_similarity (with its miner) or contrastive (with a "
                           "pair miner), at that library's defaults unless --loss_options says otherwise", choices=LOSSES)
    loss_options: str | None = _f(None, "a pytorch-metric-learning loss's own arguments over the library's "
                                        "defaults, as JSON, e.g. '{\"softmax_scale\": 50}' for nca")
    miner_options: str | None = _f(None, "the same for the miner of multi_similarity or contrastive, e.g. "
                                         "'{\"epsilon\": 0.2}'")
    sampler: str = _f("random", "batches of shuffled images, random, or of M images per class, m_per_class",
                      choices=SAMPLERS)
    m_per_class: int = _f(4, "images per class in each group of a batch, with --sampler m_per_class")
    sigma: float = _f(10.0, "Gaussian kernel width, the starting one with --sigma_learning_rate")
    sigma_learning_rate: float | None = _f(None, "learn sigma too (a temperature), at this Adam learning rate: "
                                                 "log sigma moves by about this much per step, so 0.01 lets it "
                                                 "change several-fold in an epoch of ~100 steps (default: sigma "
                                                 "stays fixed)")
    num_neighbours: int = _f(200, "K nearest centres per query")
    batch_size: int = _f(32, "images per step, in all processes together: under torchrun each process takes "
                             "its share, so a recipe is the same for any number of processes")
    learning_rate: float = _f(1e-5, "Adam learning rate")
    weight_learning_rate: float | None = _f(None, "learning rate of the kernel weights, or of proxy_nca's "
                                                  "proxies (default: --learning_rate)")
    update_interval: int = _f(5, "refresh the feature bank every this many epochs")
    centres: str = _f("paper", "paper: every centre recomputed at each refresh (the paper's scheme); online: "
                               "each image's centre moved towards its new embedding at every step, so that a "
                               "refresh only searches new neighbour lists", choices=CENTRE_SCHEMES)
    batch_kernels: bool = _f(False, "NNGK: each image's kernels are those of its K nearest stored centres and of "
                                    "every other image of its batch at its current embedding, with the gradient "
                                    "reaching both; under torchrun, the other images of its process's share")
    centre_momentum: float = _f(0.5, "with --centres online: centre = m * centre + (1 - m) * new embedding")
    monitor_test: bool = _f(True, "measure the test images at each bank refresh (the history's test accuracy; "
                                  "with --centres online this embeds the training images too); the final "
                                  "evaluation is always made")
    max_epochs: int = _f(100, "stop after this many epochs")
    max_time: float | None = _f(None, "stop after this many minutes of training (default: no limit)")
    input_size: int = _f(256, "side of the square network input")
    resize_size: int | None = _f(None, "images are resized to this before cropping (default: input * 9/8)")
    hflip: bool = _f(True, "random horizontal flips in training")
    in_memory: bool | None = _f(None, "decode the training and test images once and keep them in memory, "
                                      "augmenting whole batches (the same pixels as from the files, much faster "
                                      "for small images); when not given: when they fit in 2 GiB")
    mean: tuple[float, float, float] = _f((0.5, 0.5, 0.5), "per-channel normalisation mean", cli=False)
    std: tuple[float, float, float] = _f((0.5, 0.5, 0.5), "per-channel normalisation std", cli=False)
    device: str | None = _f(None, "cpu, cuda, cuda:N or auto (GPU if there is one); default: cpu")
    gpu_id: int | None = _f(None, "train on this GPU (as the original); leave out for the CPU")
    amp: bool = _f(False, "bf16 autocast for the network (GPU)")
    fused_loss: bool = _f(True, "on a GPU, compute the loss with fused Triton kernels once they have matched "
                                "the plain PyTorch loss there")
    workers: int | None = _f(None, "data loader worker processes; when not given, cores - 1, none on 2 cores "
                                         "or fewer")
    sync_bn: bool = _f(False, "under torchrun on GPUs, normalise BatchNorm by the statistics of the whole global "
                              "batch (SyncBatchNorm); without it each process normalises by its own share and keeps "
                              "process 0's running statistics")
    dist_timeout: float = _f(10.0, "under torchrun, minutes a process waits for the others before it stops with an "
                                   "error")
    seed: int = _f(0, "random seed")
    progress: bool = _f(True, "progress bars", cli=False)

    @property
    def unit_embeddings(self) -> bool:
        """Whether the network ends in an L2 normalisation: asked for with ``normalise``, or
        a pytorch-metric-learning loss, which all measure distances between unit vectors."""
        return self.normalise or self.loss in PML_LOSSES

    def pml_options(self) -> tuple[dict, dict]:
        """``loss_options`` and ``miner_options`` read as dicts ({} when not given); a
        :class:`ConfigError` when either is not a JSON object."""
        read = []
        for name in ("loss_options", "miner_options"):
            text = getattr(self, name)
            try:
                value = {} if text is None else json.loads(text)
            except json.JSONDecodeError as error:
                raise ConfigError(f"--{name} must be a JSON object such as '{{\"margin\": 0.5}}', got {text!r} "
                                  f"({error.msg})") from None
            if not isinstance(value, dict):
                raise ConfigError(f"--{name} must be a JSON object such as '{{\"margin\": 0.5}}', got {text!r}")
            read.append(value)
        return read[0], read[1]

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the flag of the first setting that cannot work."""
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            if value is None and kind.endswith("| None"):
                continue
            if (kind.startswith("int") and not isinstance(value, int)) or \
                    (kind.startswith("float") and not isinstance(value, (int, float))):
                raise ConfigError(f"--{f.name} must be a number, got {value!r}")
        checks = [
            (_positive(self.sigma), f"--sigma must be a positive number, got {self.sigma}"),
            (self.num_neighbours >= 1, f"--num_neighbours must be at least 1, got {self.num_neighbours}"),
            (self.batch_size >= 1, f"--batch_size must be at least 1, got {self.batch_size}"),
            (_positive(self.learning_rate), f"--learning_rate must be a positive number, got {self.learning_rate}"),
            (self.weight_learning_rate is None or _positive(self.weight_learning_rate),
             f"--weight_learning_rate must be a positive number, got {self.weight_learning_rate}"),
            (self.sigma_learning_rate is None or _positive(self.sigma_learning_rate),
             f"--sigma_learning_rate must be a positive number, got {self.sigma_learning_rate}"),
            (self.sigma_learning_rate is None or self.loss == "nngk",
             f"--sigma_learning_rate learns NNGK's kernel width; --loss {self.loss} has none"),
            (self.num_classes is None or self.num_classes >= 2,
             f"--num_classes must be at least 2 (training needs two classes), got {self.num_classes}"),
            (self.update_interval >= 1, f"--update_interval must be at least 1, got {self.update_interval}"),
            (self.max_epochs >= 0, f"--max_epochs must not be negative, got {self.max_epochs}"),
            (self.max_time is None or self.max_time > 0, f"--max_time must be positive, got {self.max_time}"),
            (_positive(self.dist_timeout), f"--dist_timeout must be a positive number, got {self.dist_timeout}"),
            (0 <= self.test_fraction < 1, f"--test_fraction must be in [0, 1), got {self.test_fraction}"),
            (self.input_size >= 8, f"--input_size must be at least 8, got {self.input_size}"),
            (self.resize_size is None or self.resize_size >= self.input_size,
             f"--resize_size {self.resize_size} must be at least --input_size {self.input_size}"),
            (self.embedding_dim is None or self.embedding_dim >= 1,
             f"--embedding_dim must be at least 1, got {self.embedding_dim}"),
            (self.workers is None or self.workers >= 0, f"--workers must not be negative, got {self.workers}"),
            (0 <= self.seed < 2**32, f"--seed must be in [0, 2**32), got {self.seed}"),
            (self.model in MODEL_NAMES, f"--model must be one of {', '.join(MODEL_NAMES)}, got {self.model!r}"),
            (self.loss in LOSSES, f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}"),
            (self.sampler in SAMPLERS, f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}"),
            (self.m_per_class >= 1, f"--m_per_class must be at least 1, got {self.m_per_class}"),
            (self.sampler != "m_per_class" or self.m_per_class < 1 or self.batch_size % self.m_per_class == 0,
             f"--batch_size {self.batch_size} is not a multiple of --m_per_class {self.m_per_class}, so batches "
             f"would cut groups of a class and leave images without another of their class; pass a --batch_size "
             f"that is a multiple of {self.m_per_class}, e.g. "
             f"{max(1, round(self.batch_size / max(self.m_per_class, 1))) * self.m_per_class}"),
            (0 <= self.dropout < 1, f"--dropout must be in [0, 1), got {self.dropout}"),
            (self.centres in CENTRE_SCHEMES,
             f"--centres must be one of {', '.join(CENTRE_SCHEMES)}, got {self.centres!r}"),
            (self.loss == "nngk" or not self.batch_kernels,
             f"--batch_kernels applies to --loss nngk only, and this run's loss is {self.loss}"),
            (0 <= self.centre_momentum < 1, f"--centre_momentum must be in [0, 1), got {self.centre_momentum}"),
            (self.model == "resnet18" or self.pretrained == "none",
             f"--pretrained applies to resnet18 only; {self.model} has no pretrained weights, so leave the flag "
             f"out (got {self.pretrained!r})"),
            (self.loss in PML_LOSSES or self.loss_options is None,
             f"--loss_options applies to the pytorch-metric-learning losses only, and this run's loss is {self.loss}"),
            (self.loss in MINED_LOSSES or self.miner_options is None,
             f"--miner_options applies to {' and '.join(MINED_LOSSES)} only (the losses with a miner), and this "
             f"run's loss is {self.loss}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.pml_options()


def _positive(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


# ResNet18's are the original's (its train.py, for ImageNet-sized photos on a GPU).
# The small CNN's were chosen on validation classes carved out of trained ones, never on
# held-out classes: on the digits (train 0-2, retrieve 3-4) K = 20 raised Recall@1 and MAP@R
# above the untrained network's where the original's K = 200 lowered both, best around
# epoch 10 (tools/heldout_curve.py); on a photo-like 28x28 stand-in (tools/proxy_photos.py,
# train 0-2, retrieve 3-4) centres moved at every step (momentum 0.5) with lr 3e-4 beat the
# paper's refresh-only scheme at 1e-4, 3e-4 and 1e-3 on seen accuracy, Recall@1 and MAP@R
# (docs/training.md has the table and commands).
MODEL_DEFAULTS = {
    "resnet18": dict(pretrained="auto", final_relu=True, sigma=10.0, num_neighbours=200, batch_size=32,
                     learning_rate=1e-5, update_interval=5, max_epochs=100, input_size=256),
    "small_cnn": dict(pretrained="none", final_relu=False, sigma=1.0, num_neighbours=20, batch_size=64,
                      learning_rate=3e-4, centres="online", update_interval=1, monitor_test=False,
                      max_epochs=10, input_size=32),
}
# Each loss's sampler is the one its authors train with: Meyer et al. (NNGK), softmax
# and Movshovitz-Attias et al. (ProxyNCA, whose proxies need no pairs in a batch) shuffle;
# Wang et al. (Multi-Similarity) take 5 images per class in batches of 80 (a batch must be
# whole groups: the models' 32 and 64 are not multiples of 5). In-batch NCA and contrastive
# need pairs of a class in each batch: 4 per class, as Musgrave et al.'s benchmark
# ("A Metric Learning Reality Check", 2020) gives every in-batch loss.
LOSS_DEFAULTS = {
    "nca": dict(sampler="m_per_class", m_per_class=4),
    "multi_similarity": dict(sampler="m_per_class", m_per_class=5, batch_size=80),
    "contrastive": dict(sampler="m_per_class", m_per_class=4),
}
# The digits are not mirror-symmetric, and their 8x8 images decode faster than a worker
# process starts. On their validation classes (train 0-2, retrieve 3-4, seeds 0 and 1) the
# paper's scheme at lr 1e-4 kept a slightly higher Recall@1 and MAP@R than the photo
# recipe (docs/training.md), so the digits keep it.
DIGITS_DEFAULTS = dict(model="small_cnn", hflip=False, workers=0, learning_rate=1e-4, centres="paper")
# Unnormalised, NNGK's loss on the digits reaches about 0 by moving the classes apart, and
# then stops teaching. On the validation classes unit-length embeddings (sigma 0.2, 0.3 and
# 0.5 tried) raised MAP@R after 10 epochs and after 1 minute, 0.2 most (docs/results.md,
# "Results on the embedded digits"); on the Fashion-MNIST folds they did not beat the small CNN's photo
# recipe, which is unchanged.
DIGITS_NNGK_DEFAULTS = dict(normalise=True, sigma=0.2)


def digits_defaults(loss: str = "nngk") -> dict:
    """The settings the embedded digits get for ``loss`` when none is given."""
    return {**DIGITS_DEFAULTS, **(DIGITS_NNGK_DEFAULTS if loss == "nngk" else {})}


def make_config(**settings) -> TrainConfig:
    """A validated :class:`TrainConfig`: the given settings over the defaults of the model
    and, when no ``data_dir`` is given, the digits'. Every automatic value (``final_relu``,
    ``workers``) is resolved, so the config says what a run uses.

    Settings that are None are left at their default, so command-line flags that were
    not given do not override anything. The loss's own sampler (:data:`LOSS_DEFAULTS`)
    applies unless ``sampler`` is given.
    """
    settings = {k: v for k, v in settings.items() if v is not None}
    loss = settings.get("loss", TrainConfig.loss)
    digits = {} if settings.get("data_dir") else digits_defaults(loss)
    model = settings.get("model", digits.get("model", TrainConfig.model))
    loss_defaults = LOSS_DEFAULTS.get(loss, {})
    config = TrainConfig(**{**MODEL_DEFAULTS.get(model, {}), **digits, **loss_defaults, **settings})
    if "m_per_class" in settings and config.sampler != "m_per_class":
        raise ConfigError(f"--m_per_class applies to --sampler m_per_class only, and this run's sampler is "
                          f"{config.sampler}; add --sampler m_per_class or leave --m_per_class out")
    if config.workers is None:
        config.workers = default_workers()
    config.validate()
    return config


def config_from_dict(saved: dict) -> TrainConfig:
    """The :class:`TrainConfig` of a saved run (its checkpoint's or config.json's dict).

    Runs saved before the per-model defaults existed stored ``final_relu`` as None and a
    small CNN's ``pretrained`` as "auto" (both meant the model's default), and no
    ``in_memory``; they are read as the values they meant, so a resumed run compares,
    validates and trains like the run it continues.
    """
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in saved.items() if k in names}
    model_defaults = MODEL_DEFAULTS.get(values.get("model", TrainConfig.model), {})
    if values.get("final_relu") is None and "final_relu" in model_defaults:
        values["final_relu"] = model_defaults["final_relu"]
    if values.get("model") == "small_cnn" and values.get("pretrained") == "auto":
        values["pretrained"] = "none"
    values.setdefault("in_memory", False)  # they read every image from its file
    return TrainConfig(**values)


def default_text(name: str) -> str:
    """How ``--help`` states the default of setting ``name``: per model where the models
    differ, and the digits' own where they have one ("" for a default of None, whose help
    says what it means)."""
    def shown(value) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    base = TrainConfig.__dataclass_fields__[name].default
    per_model = [f"{shown(d.get(name, base))} for {model}" for model, d in MODEL_DEFAULTS.items()
                 if any(name in d for d in MODEL_DEFAULTS.values())]
    parts = per_model or ([] if base is None else [shown(base)])
    per_loss: dict[str, list[str]] = {}
    for loss, d in LOSS_DEFAULTS.items():
        if name in d and d[name] != base:
            per_loss.setdefault(shown(d[name]), []).append(loss)
    parts += [f"{value} for {', '.join(losses)}" for value, losses in per_loss.items()]
    if name in DIGITS_DEFAULTS:
        parts.append(f"{shown(DIGITS_DEFAULTS[name])} for the digits")
    elif name in DIGITS_NNGK_DEFAULTS:
        parts.append(f"{shown(DIGITS_NNGK_DEFAULTS[name])} for nngk on the digits")
    return f" (default: {', '.join(parts)})" if parts else ""
