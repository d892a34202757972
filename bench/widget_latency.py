"""How long one move of notebook 3's sigma / K sliders (and notebook 5's query picker)
takes, split into computing and drawing.

    python bench/widget_latency.py [RUN_DIR]

RUN_DIR defaults to notebook 2's run (fast-mode run with NNGK_FAST=1); it is trained
first if missing. Prints the median of 20 moves per row, in milliseconds.
"""

from __future__ import annotations

import statistics
import sys
import time

from nngk_lab import explore, notebook as nb, viz, widgets


def median_ms(function, values) -> float:
    times = []
    for value in values:
        start = time.perf_counter()
        function(value)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    settings = nb.settings()
    cores = nb.limit_threads()
    run_dir = sys.argv[1] if len(sys.argv) > 1 else settings.main_run
    run = nb.train_or_load(run_dir, "cpu", **settings.training)
    emb = explore.run_embeddings(run_dir, "cpu", run)
    sigmas = [emb.sigma * (0.2 + 0.1 * i) for i in range(20)]
    explorer = widgets.SigmaExplorer(emb)
    gallery = widgets.GalleryExplorer(emb)
    view = widgets.sigma_view(emb, emb.sigma, emb.num_neighbours, 0)
    rows = [
        ("sigma_view (probabilities + accuracy)", median_ms(lambda s: widgets.sigma_view(emb, s, emb.num_neighbours, 0),
                                                            sigmas)),
        ("probability bars drawn to PNG", median_ms(
            lambda _: viz.figure_png(viz.probability_bars(view.probabilities, emb.class_names, view.true_label)),
            range(20))),
        ("sigma slider move (all of it)", median_ms(lambda s: setattr(explorer.sigma, "value", s), sigmas)),
        ("K slider move (all of it)", median_ms(lambda k: setattr(explorer.k, "value", k), range(5, 205, 10))),
        ("gallery query move (all of it)", median_ms(lambda q: setattr(gallery.query, "value", q), range(1, 21))),
    ]
    print(f"{len(emb.train)} centres, {len(emb.test)} test images, {cores} core(s)")
    print(f"{'step':40s} {'median ms':>10s}")
    for name, ms in rows:
        print(f"{name:40s} {ms:10.1f}")


if __name__ == "__main__":
    main()
