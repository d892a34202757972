"""ipywidgets explorers that tie :mod:`nngk_lab.explore` and :mod:`nngk_lab.viz` to
sliders."""

from .display import show_png
from .gallery import GalleryExplorer, GalleryView, gallery_view
from .playground import Playground
from .sigma import SigmaExplorer, SigmaView, k_choices, sigma_view
from .toy_training import TrainablePlayground
