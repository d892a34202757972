"""ipywidgets explorers that tie :mod:`nngk_lab.explore` and :mod:`nngk_lab.viz` to
sliders."""

from .display import show_png
from .gallery import GalleryView, gallery_view, GalleryExplorer
from .playground import Playground
from .toy_training import TrainablePlayground
from .sigma import SigmaView, sigma_view, k_choices, SigmaExplorer
