"""How long one move of notebook 3's sigma / K sliders, notebook 5's query picker and
notebook 6's 2-D playground takes, split into computing and drawing.

    python bench/widget_latency.py [RUN_DIR]

RUN_DIR defaults to notebook 2's run (fast-mode run with NNGK_FAST=1); it is trained
first if missing. Prints the median of 20 moves per row, in milliseconds.
"""

from __future__ import annotations

import statistics
import sys
import time

from nngk_lab import explore, viz, widgets
from nngk_lab.explore import notebook as nb
from nngk_lab.viz import playground as viz_playground


def median_ms(function, values) -> float:
    times = []
    for value in values:
        start = time.perf_counter()
        function(value)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def playground_rows(moves: int = 20) -> list[tuple[str, float]]:
    """Notebook 6's playground on its toy problem: the decision regions (recomputed when
    sigma, K or a weight moves), the figure, and whole slider moves; medians of ``moves``."""
    centres, labels = explore.toy_problem(num_classes=3, per_class=15, seed=0)
    pg = widgets.Playground(centres, labels)
    view, weights = pg.view, explore.boosted_log_weights(len(centres), pg.centre.value, 0.0)
    sigmas = [0.1 * 1.1 ** i for i in range(moves)]
    return [
        ("playground decision regions", median_ms(
            lambda s: explore.decision_regions(pg.centres, labels, s, pg.k.value, weights), sigmas)),
        ("playground figure drawn to PNG", median_ms(
            lambda _: viz.figure_png(viz_playground.playground_figure(view), dpi=widgets.display.PLOT_DPI), range(moves))),
        ("playground sigma move (all of it)", median_ms(lambda s: setattr(pg.sigma, "value", s), sigmas)),
        ("playground query x move (all of it)", median_ms(lambda x: setattr(pg.x, "value", x),
                                                           [-1.05 + 0.1 * i for i in range(moves)])),
        ("playground weight move (all of it)", median_ms(lambda v: setattr(pg.log_weight, "value", v),
                                                          [-2.1 + 0.25 * i for i in range(moves)])),
    ]


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
        *playground_rows(),
    ]
    print(f"{len(emb.train)} centres, {len(emb.test)} test images, {cores} core(s)")
    print(f"{'step':40s} {'median ms':>10s}")
    for name, ms in rows:
        print(f"{name:40s} {ms:10.1f}")


if __name__ == "__main__":
    main()
