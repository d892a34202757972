from matplotlib.figure import Figure

from nngk_lab import explore, viz


def test_figure_marks_every_refresh_and_shades_only_for_an_mlp(seed):
    state = explore.ToyTraining("xor", "mlp", seed=seed)
    state.train(10, refresh_every=4)
    fig = viz.toy_training_figure(state.view())
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    plane, _, loss_ax, _ = fig.axes
    assert len(loss_ax.lines) == 1 + len(state.refresh_steps) and len(plane.images) == 1
    free = explore.ToyTraining("xor", "free", seed=seed)
    assert len(viz.toy_training_figure(free.view()).axes[0].images) == 0
