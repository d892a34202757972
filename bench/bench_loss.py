"""How fast is the kernel loss? Forward + backward of ``nngk_lab.kernel.loss.kernel_nll``
against the original's per-sample Python loop, and against the memory floor: gathering
the (B, K, D) neighbour centres once, which any implementation must do.

    python -m bench.bench_loss            # the recorded sizes (about a minute on 2 cores)
    python -m bench.bench_loss --quick    # tiny sizes: checks the script runs

Sizes: Stanford Online Products (59,551 training images, 11,318 classes, batch 32 as in
the original, and 128), CUB-200-2011's first 100 classes (5,864 images, batch 128);
K = 200, D = 512, sigma 10.
"""

from __future__ import annotations

import argparse

import torch

from nngk_lab.kernel import loss as loss_module
from nngk_lab.device import available_cores
from nngk_lab.kernel.loss import DENSE_DOT_MAX_CENTRES_PER_NEIGHBOUR, kernel_nll

from .common import best_times, format_table, machine_summary

# (name, batch, centres, classes, time the loop too); K and D are the original's.
CASES = [("SOP", 32, 59_551, 11_318, True), ("CUB-100", 128, 5_864, 100, True),
         ("SOP-B128", 128, 59_551, 11_318, False)]
QUICK_CASES = [("tiny-many-classes", 8, 1_000, 300, True), ("tiny", 16, 40, 10, True)]
CROSSOVER_BATCHES, CROSSOVER_RATIOS = (32, 128), (10, 30, 60, 100)


def reference_loop_loss(features, targets, centres, centre_labels, neighbours, log_weights, sigma, num_classes):
    """The original's loss: one sample at a time, a (classes x K) mask per sample, sums
    clamped to 1e-10 before normalising."""
    weights = log_weights.exp()
    classes = torch.arange(num_classes, device=features.device).unsqueeze(1)
    total = features.new_zeros(())
    for i in range(features.shape[0]):
        nb = neighbours[i]
        kernel = torch.exp(-(features[i] - centres[nb]).pow(2).sum(1) / (2 * sigma ** 2)) * weights[nb]
        mask = classes == centre_labels[nb].unsqueeze(0)
        per_class = torch.zeros(num_classes, nb.shape[0], device=features.device)
        per_class[mask] = kernel.expand(num_classes, -1)[mask]
        p = per_class.sum(1)
        p = torch.where(p == 0, torch.full_like(p, 1e-10), p)
        total = total - torch.log(p / p.sum())[targets[i]]
    return total / features.shape[0]


def make_inputs(batch, num_centres, num_classes, k, dim, generator):
    centres = torch.randn(num_centres, dim, generator=generator)
    centre_labels = torch.randint(num_classes, (num_centres,), generator=generator)
    neighbours = torch.rand(batch, num_centres, generator=generator).argsort(1)[:, :k]
    # Each query's label is one of its neighbours', so the true class is always present
    # and the loop (which cannot leave a sample out) computes the same mean.
    targets = centre_labels[neighbours[:, 0]]
    features = (centres[neighbours[:, 0]] + 0.5 * torch.randn(batch, dim, generator=generator))
    log_weights = 0.1 * torch.randn(num_centres, generator=generator)
    return features, targets, centres, centre_labels, neighbours, log_weights


def run_case(name, batch, num_centres, num_classes, with_loop, k, dim, sigma, repeat, generator) -> dict:
    features, targets, centres, centre_labels, neighbours, log_weights = make_inputs(
        batch, num_centres, num_classes, k, dim, generator)
    sq_norms = centres.square().sum(1)
    x = features.clone().requires_grad_(True)
    v = log_weights.clone().requires_grad_(True)
    values = {}

    def ours():
        x.grad = v.grad = None
        loss = kernel_nll(x, targets, centres, centre_labels, neighbours, v, sigma, sq_norms).loss
        loss.backward()
        values["ours"] = loss.detach()

    def ours_forward():
        with torch.no_grad():
            kernel_nll(x, targets, centres, centre_labels, neighbours, v, sigma, sq_norms)

    def loop():
        x.grad = v.grad = None
        loss = reference_loop_loss(x, targets, centres, centre_labels, neighbours, v, sigma, num_classes)
        loss.backward()
        values["loop"] = loss.detach()

    def gather():
        centres.index_select(0, neighbours.reshape(-1))

    fns = {"gather": gather, "ours_fwd": ours_forward, "ours": ours}
    if with_loop:
        fns["loop"] = loop
    t = best_times(fns, repeat=repeat)
    path = "matmul" if num_centres <= DENSE_DOT_MAX_CENTRES_PER_NEIGHBOUR * k else "gather"
    row = {"case": name, "B": batch, "N": num_centres, "classes": num_classes, "K": k, "D": dim, "path": path,
           "loop ms": None, "ours ms": 1e3 * t["ours"], "ours fwd ms": 1e3 * t["ours_fwd"],
           "gather ms": 1e3 * t["gather"], "loop/ours": None, "ours/gather": t["ours"] / t["gather"],
           "|loss diff|": None}
    if with_loop:
        row.update({"loop ms": 1e3 * t["loop"], "loop/ours": t["loop"] / t["ours"],
                    "|loss diff|": float((values["ours"] - values["loop"]).abs())})
    return row


def path_crossover(batches, ratios, k, dim, sigma, repeat, generator) -> list[dict]:
    """Both ways to the dot products at N = ratio x K, to place the threshold between them."""
    rows = []
    for batch in batches:
        for ratio in ratios:
            features, targets, centres, labels, neighbours, log_weights = make_inputs(
                batch, ratio * k, 10, k, dim, generator)
            x = features.requires_grad_(True)
            sq_norms = centres.square().sum(1)

            def run(threshold):
                def fn():
                    loss_module.DENSE_DOT_MAX_CENTRES_PER_NEIGHBOUR = threshold
                    x.grad = None
                    kernel_nll(x, targets, centres, labels, neighbours, log_weights, sigma, sq_norms).loss.backward()
                return fn

            try:
                t = best_times({"gather": run(0), "matmul": run(ratio)}, repeat=repeat)
            finally:
                loss_module.DENSE_DOT_MAX_CENTRES_PER_NEIGHBOUR = DENSE_DOT_MAX_CENTRES_PER_NEIGHBOUR
            rows.append({"B": batch, "N / K": ratio, "N": ratio * k, "gather path ms": 1e3 * t["gather"],
                         "matmul path ms": 1e3 * t["matmul"], "matmul / gather": t["matmul"] / t["gather"]})
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m bench.bench_loss", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check that the script runs")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (best is kept)")
    p.add_argument("--neighbours", type=int, default=200)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--sigma", type=float, default=10.0)
    args = p.parse_args(argv)
    torch.set_num_threads(available_cores())
    cases, k, dim = (QUICK_CASES, 20, 32) if args.quick else (CASES, args.neighbours, args.dim)
    generator = torch.Generator().manual_seed(0)
    rows = [run_case(*case, k, dim, args.sigma, args.repeat, generator) for case in cases]
    print(f"kernel loss forward+backward, float32 -- {machine_summary()}")
    print(format_table(rows))
    print("loop: the original's per-sample loop; ours: nngk_lab.kernel.loss.kernel_nll, whose dot products come "
          "from one (B, N) matrix product (path matmul, N <= "
          f"{DENSE_DOT_MAX_CENTRES_PER_NEIGHBOUR} K) or from the gathered neighbour centres (path gather); "
          "gather: index_select of the (B, K, D) neighbour centres alone, the floor of the gather path. "
          f"Best of {args.repeat} runs, taken in turns.")
    batches, ratios = ((4,), (5, 50)) if args.quick else (CROSSOVER_BATCHES, CROSSOVER_RATIOS)
    crossover = path_crossover(batches, ratios, k, dim, args.sigma, args.repeat, generator)
    print(f"\nwhere the matmul path stops paying: loss forward+backward by path, K = {k}, D = {dim}")
    print(format_table(crossover))
    print(f"nngk_lab uses the matmul path for N <= {DENSE_DOT_MAX_CENTRES_PER_NEIGHBOUR} K.")
    return rows


if __name__ == "__main__":
    main()
