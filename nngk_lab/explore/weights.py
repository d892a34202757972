"""What the kernel weights learnt: the training images with the highest and lowest
learnt weights next to their nearest centres, and a label-noise experiment that flips
the labels of a few percent of the training images and asks whether their weights fall.

The flipped labels live in a prepared copy of the data folder (symlinks, so no image is
copied): a flipped image's link sits in another trained class's folder under the name
``flipped_<original class>_<original name>``, so every flip can be read off its path. Training and the
data split are then the ordinary ones.

    python -m nngk_lab.weights_study --save_dir runs/label-noise --fraction 0.05 --weight_learning_rate 1e-2

prints how many flipped training images are among the lowest-weighted 5%, against the
number expected by chance."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import torch

from ..data.digits import export_digits
from ..data.folders import scan_image_folder
from ..data.split import split_samples
from ..errors import ConfigError
from ..training.config import digits_defaults
from .embeddings import Embeddings, run_embeddings
from .neighbours import GalleryRow, load_image, query_neighbours
from .notebook import train_or_load

FLIPPED_PREFIX = "flipped_"


def flip_labels(data_dir, into, num_trained: int, fraction: float, seed: int = 0) -> dict[str, str]:
    """Write ``into``: a copy of the class-folder tree ``data_dir`` made of symlinks, in
    which ``round(fraction * n)`` of the ``n`` images of the first ``num_trained`` classes,
    drawn at random, sit in another (random) trained class. Held-out classes are linked
    whole. Returns ``{flipped link path: original class name}``; an existing ``into`` is
    refused rather than mixed with."""
    data_dir, into = Path(data_dir), Path(into)
    classes, samples = scan_image_folder(data_dir)
    if not 2 <= num_trained <= len(classes):
        raise ValueError(f"num_trained must be in [2, {len(classes)}], got {num_trained}")
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    if into.exists():
        raise FileExistsError(f"{into} exists; remove it or choose another folder")
    trained = [(path, label) for path, label in samples if label < num_trained]
    rng = random.Random(seed)
    chosen = set(rng.sample(range(len(trained)), round(fraction * len(trained))))
    for name in classes[:num_trained]:
        (into / name).mkdir(parents=True)
    for name in classes[num_trained:]:
        (into / name).symlink_to((data_dir / name).resolve(), target_is_directory=True)
    flipped = {}
    for i, (path, label) in enumerate(trained):
        source = Path(path).resolve()
        if i in chosen:
            new_label = rng.choice([c for c in range(num_trained) if c != label])
            link = into / classes[new_label] / f"{FLIPPED_PREFIX}{classes[label]}_{Path(path).name}"
            flipped[str(link)] = classes[label]
        else:
            link = into / classes[label] / Path(path).name
        link.symlink_to(source)
    return flipped


def is_flipped(paths) -> torch.Tensor:
    """Which of these image paths are flipped links (see :func:`flip_labels`)."""
    return torch.tensor([Path(p).name.startswith(FLIPPED_PREFIX) for p in paths], dtype=torch.bool)


def hypergeometric_tail(hits: int, population: int, marked: int, drawn: int) -> float:
    """P(X >= hits) for the number X of marked items among ``drawn`` items drawn without
    replacement from ``population`` items of which ``marked`` are marked. Exact: integer
    binomial coefficients, one division at the end."""
    favourable = sum(math.comb(marked, j) * math.comb(population - marked, drawn - j)
                     for j in range(max(hits, 0), min(marked, drawn) + 1))
    return favourable / math.comb(population, drawn)


def lowest_weight_enrichment(log_weights: torch.Tensor, flipped: torch.Tensor, share: float = 0.05) -> dict:
    """How many flipped images are among the ``share`` lowest-weighted training images,
    and how surprising that is.

    Returns ``lowest`` (the number of images in that group, ``ceil(share * n)``, ties
    broken by index), ``flipped_in_lowest``, ``observed_share``, ``chance_share`` (the
    flipped share of all images, what a random group would hold on average),
    ``p_value`` (the hypergeometric chance that a random group of that size holds at
    least as many flipped images), and the mean log-weight of flipped and clean images.
    """
    n, n_flipped = log_weights.numel(), int(flipped.sum())
    lowest = max(1, math.ceil(share * n - 1e-9))  # 0.05 * 100 is 5.000000000000001 in floats
    order = torch.argsort(log_weights.double(), stable=True)[:lowest]
    hits = int(flipped[order].sum())

    def mean(mask: torch.Tensor) -> float:
        return float(log_weights[mask].double().mean()) if mask.any() else float("nan")

    return {"n": n, "n_flipped": n_flipped, "lowest": lowest, "flipped_in_lowest": hits,
            "observed_share": hits / lowest, "chance_share": n_flipped / n,
            "p_value": hypergeometric_tail(hits, n, n_flipped, lowest),
            "mean_log_weight_flipped": mean(flipped), "mean_log_weight_clean": mean(~flipped)}


def weight_gallery_rows(emb: Embeddings, indices, k: int = 6) -> list[GalleryRow]:
    """Training images ``indices`` (into the bank), each with its learnt weight and its
    ``k`` nearest other centres (framed green when they share its label), for
    :func:`nngk_lab.viz.neighbour_gallery`. Images with flipped labels say so."""
    flipped = is_flipped(emb.train_paths)
    rows = []
    for i in indices:
        i = int(i)
        label = int(emb.train_labels[i])
        nb = query_neighbours(emb.train[i], emb.train, emb.train_labels, k, emb.sigma, emb.log_weights, exclude=i)
        weight = float(emb.log_weights[i].exp())
        title = f"{emb.class_names[label]}{' (flipped)' if flipped[i] else ''}\nw = {weight:.3g}"
        captions = [f"{emb.class_names[int(c)]}{' (flipped)' if flipped[j] else ''}\nd\u00b2={float(d):.2g}"
                    for c, d, j in zip(nb.labels, nb.sq_dists, nb.indices)]
        rows.append(GalleryRow(load_image(emb.train_paths[i]), title,
                               [load_image(emb.train_paths[int(j)]) for j in nb.indices], captions,
                               [int(c) == label for c in nb.labels]))
    return rows


def label_noise_experiment(save_dir, fraction: float = 0.05, weight_learning_rate: float = 1e-2,
                           share: float = 0.05, flip_seed: int = 0, device="cpu", **config) -> tuple[Embeddings, dict]:
    """Flip ``fraction`` of the trained classes' labels (``save_dir/data``), train on
    them (``save_dir/run``, reused when finished) and measure
    :func:`lowest_weight_enrichment` over the training images that got a flipped label.

    ``config`` holds other :func:`nngk_lab.training.config.make_config` settings; its ``data_dir``
    (default: the digits, with their defaults) is the folder whose labels are flipped, and
    its ``num_classes`` the trained classes. ``weight_learning_rate`` defaults to 1e-2: at
    the digits' 1e-4, Adam's steps of about the learning rate move a log-weight by at most
    ~0.012 in ten epochs, too little to change a prediction (their order, though, already
    singles out flipped images: see docs/notebooks.md).
    Returns the run's embeddings (with its learnt weights) and the result.
    """
    config = {k: v for k, v in config.items() if v is not None}  # unset flags keep the defaults
    save_dir = Path(save_dir)
    source = Path(config["data_dir"]) if "data_dir" in config else export_digits()
    classes, samples = scan_image_folder(source, extensions=config.get("im_ext"))
    num_trained = split_samples(classes, samples, config.get("num_classes")).num_trained
    noisy, manifest = save_dir / "data", save_dir / "flips.json"
    flips = {"source": str(source.resolve()), "classes": classes, "num_classes": num_trained, "fraction": fraction,
             "seed": flip_seed}
    stored = json.loads(manifest.read_text()) if manifest.is_file() else {}
    if noisy.exists() and stored.get("classes") != classes and \
            all(stored.get(k) == v for k, v in flips.items() if k != "classes"):
        shutil.rmtree(noisy)  # links to class folders the source has since renamed (the digits'): made again
    if not noisy.exists():
        flipped = flip_labels(source, noisy, num_trained, fraction, flip_seed)
        # Written last: a folder without it was left half-made by an interrupted run.
        manifest.write_text(json.dumps({**flips, "flipped": flipped}, indent=1))
    stored = json.loads(manifest.read_text()) if manifest.is_file() else {}
    if {k: stored.get(k) for k in flips} != flips:
        raise ConfigError(f"{noisy} holds labels flipped with other settings ({manifest} is missing or differs); "
                          "choose another save_dir or delete that folder")
    base = {} if "data_dir" in config else digits_defaults(config.get("loss", "nngk"))
    run_dir = save_dir / "run"
    run = train_or_load(run_dir, device, **{**base, **config, "data_dir": str(noisy), "num_classes": num_trained,
                                            "weight_learning_rate": weight_learning_rate})
    emb = run_embeddings(run_dir, device, run)
    result = lowest_weight_enrichment(emb.log_weights, is_flipped(emb.train_paths), share)
    return emb, {**result, "fraction": fraction, "weight_learning_rate": weight_learning_rate, "share": share}


def describe(result: dict) -> str:
    """The experiment's result as two sentences."""
    return (f"{result['n_flipped']} of the {result['n']} training images have a flipped label "
            f"({result['chance_share']:.1%}); among the {result['lowest']} lowest-weighted ({result['share']:.0%}) "
            f"there are {result['flipped_in_lowest']} ({result['observed_share']:.1%}, chance: "
            f"{result['chance_share']:.1%}, p = {result['p_value']:.2g}). Mean log-weight: flipped "
            f"{result['mean_log_weight_flipped']:+.4f}, clean {result['mean_log_weight_clean']:+.4f} "
            f"(weight learning rate {result['weight_learning_rate']:g}).")
