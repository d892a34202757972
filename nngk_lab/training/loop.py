"""The training loop (``python -m nngk_lab.train``): epochs, bank refreshes, steps, stopping.

Every ``update_interval`` epochs the feature bank is refreshed (all centres recomputed in
eval mode, every training example's K nearest other centres found); between refreshes
the neighbour lists stay fixed. Adam trains the network and the kernel weights. The run's
folder and checkpoint are :mod:`nngk_lab.training.runs`'s, its settings :mod:`nngk_lab.training.config`'s."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from ..data.samplers import check_m_per_class
from ..data.split import DataSplit
from ..device import available_cores, processes_per_machine
from ..errors import ConfigError, NNGKError, ResourceError
from ..files import atomic_write_text
from ..kernel.bank import FeatureBank, embed_shared
from ..kernel.classify import classification_metrics
from ..kernel.loss import KernelWeights
from ..models.baselines import PML_LOSSES
from .config import TrainConfig
from .interrupts import DeferredInterrupt
from .loaders import RunImages, fits_in_memory, load_split, no_heldout_warning
from .parts import build_initial_parts, kernel_sigma
from .runs import (
    Progress,
    check_finite,
    check_same_data,
    check_save_dir,
    data_fingerprint,
    read_checkpoint,
    restore,
    resumed_config,
    run_lock,
    save_checkpoint,
    saved_evaluation,
)
from .step import EPOCH_SUMS, TrainStep, add_to_sums

CHECK_EVERY_STEPS = 20


STOP_REASONS = ("max_epochs", "max_time", "interrupted")  # by priority, when processes disagree


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained parts, the per-epoch history, the test
    evaluation, and whether the run stopped early (``stop_reason``)."""

    config: TrainConfig
    split: DataSplit
    model: nn.Module
    bank: FeatureBank
    kernel_weights: KernelWeights | None
    head: nn.Linear | None
    history: list[dict] = field(default_factory=list)
    evaluation: dict = field(default_factory=dict)
    stop_reason: str = "max_epochs"


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train (or resume) a run; return the result.

    Stops at ``max_epochs``, after ``max_time`` minutes, or on Ctrl-C or SIGTERM (a
    checkpoint is saved and ``stop_reason`` says why). With ``resume``, continues the
    run in ``config.save_dir`` if there is one, with its saved settings except those in
    :data:`nngk_lab.training.runs.RESUME_OVERRIDES` (and ``data_dir`` if given), and refuses data
    that changed. A resumed run on the CPU gives the same history and weights as an
    uninterrupted one, whatever stopped it. Raises :class:`NonFiniteLossError` if the loss
    or weights become NaN or infinite; the last good checkpoint is then left as it was.

    Under torchrun the processes train together (:mod:`nngk_lab.distributed`); process 0
    checks the save folder, holds its lock and writes the files.
    """
    config.validate()
    save_dir = Path(config.save_dir)
    with distributed.session(config.device, config.gpu_id, config.dist_timeout) as device, \
            contextlib.ExitStack() as held:
        given = config
        config = distributed.from_writer(lambda: given)  # process 0's settings hold for all
        resume_from = distributed.from_writer(lambda: _claim(save_dir, resume, held))
        try:
            return _train(config, device, save_dir, resume_from)
        except (NNGKError, torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
            if distributed.lost_contact(e):
                raise distributed.lost(e) from e
            # A CPU allocation failure is a plain RuntimeError; any other one is not ours.
            out_of_memory = isinstance(e, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(e)
            if not (out_of_memory or isinstance(e, NNGKError)):
                raise
            # Free the failed run's memory and loader worker processes now, not at Python's
            # next garbage collection, so that a notebook can go on.
            traceback.clear_frames(e.__traceback__)
            if not out_of_memory:
                raise
            memory = "GPU memory" if device.type == "cuda" else "memory"
            raise ResourceError(f"the run needs more {memory} than is free, so it stopped; the last checkpoint in "
                                f"{save_dir} was kept. Free memory and continue with --resume, or start a new "
                                "run with a smaller --batch_size or --input_size") from e


def _claim(save_dir: Path, resume: bool, held: contextlib.ExitStack) -> Path | None:
    """The checkpoint to resume from (None for a new run), after checking the save folder
    and taking its lock until ``held`` closes."""
    resume_from = check_save_dir(save_dir, resume)
    held.enter_context(run_lock(save_dir))
    return resume_from


def _check_sizes(config: TrainConfig, num_train: int) -> None:
    if config.batch_size > num_train:
        raise ConfigError(f"--batch_size {config.batch_size} is larger than the {num_train} training images")
    if config.loss == "nngk" and config.num_neighbours > num_train - 1:
        raise ConfigError(f"--num_neighbours {config.num_neighbours} is larger than the bank allows "
                          f"({num_train} training images, so at most {num_train - 1} other centres); "
                          f"pass --num_neighbours {num_train - 1} or less")
    distributed.check_batches(num_train, config.batch_size)


def _train(config: TrainConfig, device: torch.device, save_dir: Path, resume_from: Path | None) -> TrainResult:
    torch.set_num_threads(max(1, available_cores() // processes_per_machine()))
    state = distributed.from_writer(lambda: read_checkpoint(resume_from)) if resume_from else None
    if state is not None:
        config = resumed_config(state["config"], config)
    if not distributed.is_writer():  # process 0 shows the progress
        config = dataclasses.replace(config, progress=False)
    split = load_split(config)
    fingerprint = data_fingerprint(split)
    distributed.check_same_data(fingerprint)
    if state is not None:
        check_same_data(state, split, fingerprint, config, resume_from)
    _check_sizes(config, len(split.train))
    if config.in_memory is None:
        config = dataclasses.replace(config, in_memory=fits_in_memory(config, split))
    if config.sampler == "m_per_class":
        check_m_per_class(config.m_per_class, [label for _, label in split.train], split.classes)
    if config.loss in PML_LOSSES and distributed.world_size() > 1:
        raise ConfigError(f"--loss {config.loss} compares the images of a batch with each other, and torchrun "
                          "splits each batch across processes; train it on one process")
    warning = no_heldout_warning(split)  # once every check has passed: training starts
    if warning and distributed.is_writer():
        print(warning, file=sys.stderr)
    run = _Run(config, split, device, save_dir, fingerprint)
    if state is not None:
        run.restored(restore(state, run.parts, device, resume_from))
    return run.train(state)


class _Run:
    """One run's training: its parts, data and :class:`~nngk_lab.training.runs.Progress`, and the
    phases of the loop as methods (refresh, one epoch, save, the final evaluation)."""

    def __init__(self, config: TrainConfig, split: DataSplit, device: torch.device, save_dir: Path,
                 fingerprint: str):
        self.config, self.split, self.device, self.save_dir = config, split, device, save_dir
        self.fingerprint = fingerprint
        self.parts = build_initial_parts(config, split.num_trained, len(split.train), device)
        self.progress = Progress()
        self.images = RunImages(config, split, device)
        self.k_train = min(config.num_neighbours, len(split.train) - 1)
        self.nngk = self.parts.nngk
        network = distributed.wrap(self.parts.model, (self.parts.kernel_weights, self.parts.head,
                                                      self.parts.criterion), device, config.sync_bn)
        self.step = TrainStep(network, self.parts.optimiser, self.nngk, self.parts.head, device, config.amp,
                              criterion=self.parts.criterion,
                              online_centres=self.nngk is not None and self.online_centres,
                              loss_share=distributed.loss_share if distributed.active() else None)

    def restored(self, progress: Progress) -> None:
        """Continue from a checkpoint's ``progress``; its bank is the NNGK loss's again."""
        self.progress = progress
        if self.nngk is not None:
            self.nngk.bank = progress.bank

    # -- the loop --------------------------------------------------------------------------

    def train(self, state: dict | None) -> TrainResult:
        """Train from :attr:`progress` (restored from the checkpoint ``state``, if any) to
        the end of the run."""
        p, config = self.progress, self.config
        self.started = time.monotonic() - p.elapsed * 60
        resumed_at = (p.epoch, p.step)
        # A resumed run that had already used its --max_time takes no further step.
        stop_reason = STOP_REASONS[distributed.highest(int(p.elapsed > 0 and self.time_up()))]
        with DeferredInterrupt(distributed.signal_grace_s()) as interrupt:
            while p.epoch < config.max_epochs and stop_reason == "max_epochs":
                if self.refresh_due():
                    self.refresh()
                    if p.history and config.monitor_test:
                        p.history[-1].update(self.test_metrics(self.current_bank()))
                    self.save()
                stop_reason = self.train_epoch(interrupt)
                if stop_reason != "max_epochs" and p.step * config.batch_size < len(self.split.train):
                    self.save()  # mid-epoch: resume continues this epoch from the next batch
                    break
                self.end_epoch()
                self.save()
        if stop_reason == "interrupted":
            if distributed.is_writer():
                print(f"Interrupted: checkpoint saved in {self.save_dir}; continue with --resume.", file=sys.stderr)
            return self.result({}, stop_reason)
        finished = state is not None and state["finished"]
        saved = distributed.from_writer(lambda: saved_evaluation(self.save_dir)) if finished else None
        if saved is not None and (p.epoch, p.step) == resumed_at:
            # Resuming a finished run with nothing left to train: its files stay as they are,
            # so caches and metrics.json made from them stay valid.
            eval_bank = state.get("eval_bank")
            return self.result(saved, saved.get("stop_reason", stop_reason),
                               FeatureBank.from_state_dict(eval_bank, self.device) if eval_bank else None)
        evaluation, bank = self.finish(stop_reason)
        return self.result(evaluation, stop_reason, bank)

    def time_up(self) -> bool:
        return self.config.max_time is not None and time.monotonic() - self.started > self.config.max_time * 60

    def refresh_due(self) -> bool:
        bank = self.progress.bank
        return self.config.loss == "nngk" and (bank is None or (self.progress.epoch % self.config.update_interval
                                                                == 0 and bank.refreshed_at_epoch != self.progress.epoch))

    def build_bank(self) -> FeatureBank:
        """All centres from the current model, and each one's K nearest other centres."""
        return FeatureBank.build(self.parts.model, self.images.eval_batches("train"), self.device, self.k_train,
                                 self.progress.epoch, self.config.progress)

    @property
    def online_centres(self) -> bool:
        return self.config.centres == "online"

    def refresh(self) -> None:
        """The scheduled refresh of the NNGK loss's bank: new centres and neighbour lists
        or, where the centres follow the network at every step (``--centres online``), new
        neighbour lists. The run's progress holds the same bank, for its checkpoint."""
        p = self.progress
        if self.online_centres and p.bank is not None:
            self.nngk.refresh_neighbours(epoch=p.epoch)
        else:
            self.nngk.refresh(self.parts.model, self.images.eval_batches("train"), epoch=p.epoch,
                              progress=self.config.progress)
        p.bank = self.nngk.bank

    def current_bank(self) -> FeatureBank:
        """A bank of the current model's centres: the training bank just after a refresh
        that recomputed it, else a new one (not kept for training)."""
        p = self.progress
        fresh = (p.bank is not None and p.bank.refreshed_at_epoch == p.epoch and p.step == 0
                 and not self.online_centres)
        return p.bank if fresh else self.build_bank()

    def train_epoch(self, interrupt: DeferredInterrupt) -> str:
        """Train the rest of the current epoch; return why it stopped: ``"max_epochs"`` when
        it ran to its end, else ``"interrupted"`` or ``"max_time"``."""
        p, config = self.progress, self.config
        loader = distributed.split_loader(self.images.epoch_batches(p.epoch, p.step))
        # Starting from the saved sums keeps a resumed epoch's float additions in order
        # (on process 0 only: the processes' sums are added at the end).
        sums = {k: torch.tensor(p.sums.get(k, 0.0) if distributed.is_writer() else 0.0, device=self.device)
                for k in EPOCH_SUMS}
        self.parts.model.train()
        stop_reason = "max_epochs"
        bar = tqdm(loader, desc=f"epoch {p.epoch + 1}/{config.max_epochs}", disable=not config.progress,
                   leave=False)
        for images, labels, index in bar:
            distributed.seed_step(config.seed, p.epoch, p.step)
            add_to_sums(sums, self.step(images, labels, index))
            p.step += 1
            if p.step % CHECK_EVERY_STEPS == 0:  # a device sync, so not every step
                running_loss = float(sums["loss"]) / max(float(sums["present"]), 1.0)
                check_finite("loss", distributed.everywhere(math.isfinite(running_loss)), p.epoch + 1,
                             self.save_dir)
                bar.set_postfix(loss=f"{running_loss:.4f}")
            stop = 2 if interrupt.requested else 1 if self.time_up() else 0
            stop_reason = STOP_REASONS[distributed.highest(stop)]  # all processes stop after the same step
            if stop_reason != "max_epochs":
                break
        bar.close()
        sums = distributed.sum_everywhere(sums)
        check_finite("loss", bool(sums["loss"].isfinite()), p.epoch + 1, self.save_dir)
        p.sums = {key: float(sums[key]) for key in EPOCH_SUMS}
        p.elapsed = (time.monotonic() - self.started) / 60
        return stop_reason

    def end_epoch(self) -> None:
        p = self.progress
        seen = p.sums["present"] + p.sums["absent"]
        p.history.append({"epoch": p.epoch + 1, "loss": p.sums["loss"] / max(p.sums["present"], 1),
                          "train_accuracy": p.sums["correct"] / max(seen, 1),
                          "absent_fraction": p.sums["absent"] / max(seen, 1), "minutes": p.elapsed,
                          "grad_norm": p.sums["grad_norm"] / max(p.sums["steps"], 1)})
        if self.nngk is not None:  # the diagnostics of docs/tuning.md: how stale the bank is, sigma
            p.history[-1].update(centre_staleness=p.sums["staleness"] / max(seen, 1), sigma=self.nngk.sigma)
        p.epoch, p.step = p.epoch + 1, 0
        p.sums = dict.fromkeys(EPOCH_SUMS, 0.0)
        report = self.parts.criterion.take_report() if self.parts.criterion is not None else None
        if report:
            tqdm.write(f"epoch {p.epoch}: {report}", file=sys.stderr)

    def save(self, finished: bool = False, eval_bank: FeatureBank | None = None) -> None:
        if distributed.is_writer():
            save_checkpoint(self.save_dir, self.config, self.split, self.fingerprint, self.parts, self.progress,
                            self.device, finished, eval_bank)
        distributed.barrier()

    # -- the end -------------------------------------------------------------------------

    def finish(self, stop_reason: str) -> tuple[dict, FeatureBank]:
        """Evaluate the final model on the test images, save the finished run and eval.json.

        The final model's bank replaces the training bank only where the next epoch would
        have refreshed it anyway (or for softmax, which trains without one); otherwise it is
        kept apart, so that extending the run continues exactly as an uninterrupted one.
        A run stopped mid-epoch is recorded as such (``partial_epoch_steps``); the history
        keeps finished epochs only.
        """
        p, config = self.progress, self.config
        # Where the next epoch would recompute the bank anyway, the final one is that bank.
        at_refresh = p.step == 0 and (config.loss != "nngk" or (p.epoch % config.update_interval == 0
                                                                 and not self.online_centres))
        bank = self.current_bank()
        eval_bank = None
        if at_refresh:
            p.bank = bank
            if self.nngk is not None:
                self.nngk.bank = bank
        elif bank is not p.bank:
            eval_bank = bank
        evaluation = self.test_metrics(bank)
        if p.history and p.step == 0:
            p.history[-1].update(evaluation)
        evaluation = {"epochs": p.epoch, **({"partial_epoch_steps": p.step} if p.step else {}),
                      "minutes": p.elapsed, "stop_reason": stop_reason, **evaluation}
        self.save(finished=True, eval_bank=eval_bank)
        if distributed.is_writer():
            atomic_write_text(json.dumps(evaluation, indent=2), self.save_dir / "eval.json")
        return evaluation, bank

    def test_metrics(self, bank: FeatureBank) -> dict:
        """Accuracy on the test images of the trained classes (``bank`` must be the current
        model's)."""
        if not self.split.test:
            return {}
        queries, labels = embed_shared(self.parts.model, self.images.eval_batches("test"), self.device,
                                       self.config.progress, desc="embedding test images")
        kw = self.parts.kernel_weights
        return {"num_test_images": len(self.split.test),
                **classification_metrics(queries, labels, bank, kw.log_weights.detach() if kw is not None else None,
                                         kernel_sigma(self.config, kw), self.config.num_neighbours,
                                         self.split.num_trained, self.parts.head)}

    def result(self, evaluation: dict, stop_reason: str, bank: FeatureBank | None = None) -> TrainResult:
        return TrainResult(self.config, self.split, self.parts.model, bank or self.progress.bank,
                           self.parts.kernel_weights,
                           self.parts.head, self.progress.history, evaluation, stop_reason)
