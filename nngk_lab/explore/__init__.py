"""What the notebooks compute before they draw: a run's embeddings, sigma and K sweeps,
neighbours and galleries, the 2-D playground, film and trainable playground, the distance scale, the kernel
weights study, and the notebooks' shared set-up (:mod:`.notebook`)."""

from .cache import run_fingerprint, cached, fingerprint
from .confidence import Ray, confidence_along_ray, HeldoutConfidence, heldout_confidence, most_confident
from .distance_scale import NeighbourDistances, neighbour_distances, WeightMovement, weight_movement
from .embeddings import Embeddings, run_embeddings, untrained_embeddings, untrained_view
from .new_classes import FewShot, few_shot, pick_shots, train_head, predict_among
from .film import film_dir, train_film, train_films
from .gradient import loss_gradient, TrainingSteps, training_steps
from .maps import umap_coordinates
from .metrics_example import WorkedItem, worked_retrieval, worked_retrieval_text
from .neighbours import (QueryNeighbours, query_neighbours, worst_failures, sigma_sensitive_query,
    least_confident_order, examples_per_class, load_image, GalleryRow, gallery_row)
from .refresh import RefreshRun, refresh_study
from .playground import (toy_problem, plane_grid, Regions, PlaygroundView, boosted_log_weights, decision_regions,
    playground_view)
from .toy_training import (TOY_DATASETS, EMBEDDINGS, toy_data, FreeEmbedding, Normalised, toy_model, ToyView,
    ToyTraining)
from .run_settings import settings_rows, settings_table
from .sweeps import classify, test_accuracy, recall_at_1, test_time_sweep, training_sigma_sweep
from .weights import (flip_labels, is_flipped, hypergeometric_tail, lowest_weight_enrichment, weight_gallery_rows,
    label_noise_experiment, describe)

# What the notebooks also use from lower layers, so that they import explore, viz and widgets only.
from ..evaluation.compare import comparison_table, load_metrics
from ..evaluation.metrics import map_at_r, recall_at_k
from ..evaluation.time_to_accuracy import load_or_run, run_dir, summary_table
from ..kernel.classify import kernel_predict_log_probs
from ..kernel.loss import kernel_nll
from ..training.config import make_config
