"""Figures. Every function returns a :class:`matplotlib.figure.Figure` built without
pyplot, so nothing is shown twice in Jupyter and nothing needs a screen."""

from .compare import comparison_figure, quality_figure
from .confidence import confidence_histograms, confidence_ray_figure
from .film import film_animation_html, film_snapshots
from .gallery import neighbour_gallery
from .images import augmentation_grid, image_grid, pixel_histograms, split_counts
from .kernel import probability_bars, query_probabilities, toy_kernel_figure, toy_sigma_maps, toy_steps_figure
from .maps import MapPanel, embedding_maps
from .playground import playground_figure
from .refresh import refresh_figure
from .runs import distance_histograms, sigma_sweep_figure, training_curves, validation_figure
from .style import class_colours, figure_png, region_shades, show_image, to_display
from .toy_training import toy_training_figure
from .weights import label_noise_figure, weight_distribution
