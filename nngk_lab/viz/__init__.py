"""Figures. Every function returns a :class:`matplotlib.figure.Figure` built without
pyplot, so nothing is shown twice in Jupyter and nothing needs a screen."""

from .compare import comparison_figure, quality_figure
from .confidence import confidence_ray_figure, confidence_histograms
from .film import film_snapshots, film_animation_html
from .gallery import neighbour_gallery
from .images import image_grid, augmentation_grid, pixel_histograms, split_counts
from .kernel import query_probabilities, probability_bars, toy_kernel_figure, toy_sigma_maps, toy_steps_figure
from .maps import MapPanel, embedding_maps
from .playground import region_shades, playground_figure
from .refresh import refresh_figure
from .runs import training_curves, sigma_sweep_figure, distance_histograms
from .style import class_colours, figure_png, to_display, show_image
from .toy_training import toy_training_figure
from .weights import weight_distribution, label_noise_figure
