"""What the notebooks compute before they draw: a run's embeddings, sigma and K sweeps,
neighbours and galleries, the 2-D playground and film, the distance scale, the kernel
weights study, choosing a setting on validation classes, and the notebooks' shared set-up (:mod:`.notebook`)."""

# What the notebooks also use from lower layers, so that they import explore, viz and widgets only.
from ..evaluation.compare import comparison_table, load_metrics
from ..evaluation.metrics import map_at_r, recall_at_k
from ..evaluation.time_to_accuracy import load_or_run, run_dir, summary_table
from ..kernel.classify import kernel_predict_log_probs
from ..kernel.loss import kernel_nll
from ..training.config import make_config
from .cache import cached, fingerprint, run_fingerprint
from .confidence import HeldoutConfidence, Ray, confidence_along_ray, heldout_confidence, most_confident
from .distance_scale import NeighbourDistances, WeightMovement, neighbour_distances, weight_movement
from .embeddings import Embeddings, run_embeddings, untrained_embeddings, untrained_view
from .film import film_dir, train_film, train_films
from .gradient import TrainingSteps, loss_gradient, training_steps
from .maps import umap_coordinates
from .metrics_example import WorkedItem, worked_retrieval, worked_retrieval_text
from .neighbours import (
    GalleryRow,
    QueryNeighbours,
    examples_per_class,
    gallery_row,
    least_confident_order,
    load_image,
    query_neighbours,
    sigma_sensitive_query,
    worst_failures,
)
from .new_classes import FewShot, few_shot, pick_shots, predict_among, train_head
from .playground import (
    PlaygroundView,
    Regions,
    boosted_log_weights,
    centre_choices,
    decision_regions,
    plane_grid,
    playground_view,
    toy_problem,
)
from .refresh import RefreshRun, refresh_study
from .run_settings import settings_rows, settings_table
from .toy_training import (
    EMBEDDINGS,
    TOY_DATASETS,
    FreeEmbedding,
    Normalised,
    ToyTraining,
    ToyView,
    toy_data,
    toy_model,
)
from .sweeps import classify, recall_at_1, test_accuracy, test_time_sweep, training_sigma_sweep
from .validation import subset_settings, validation_sweep, validation_text
from .weights import (
    describe,
    flip_labels,
    hypergeometric_tail,
    is_flipped,
    label_noise_experiment,
    lowest_weight_enrichment,
    weight_gallery_rows,
)
