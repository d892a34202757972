"""UMAP coordinates of an embedding for the notebooks' maps. Everything returns plain tensors, arrays or dataclasses; ``viz`` draws them
and ``widgets`` wires them to sliders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .cache import cached, fingerprint

# --------------------------------------------------------------------------- UMAP

def umap_coordinates(features, seed: int = 0, n_epochs: int | None = None, n_neighbors: int = 15,
                     cache_dir=None) -> np.ndarray:
    """2-D UMAP coordinates (N, 2) of the rows of ``features`` (umap-learn, seeded).

    With ``cache_dir`` the coordinates are kept there under a hash of the inputs, so the
    same features are mapped once.
    """
    features = torch.as_tensor(features).float().cpu()

    def compute() -> dict:
        import warnings

        import umap  # slow first import (numba): only when a map is asked for

        reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(features) - 1),
                            random_state=seed, n_epochs=n_epochs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*n_jobs value.*")  # seeding forces one thread
            return {"coords": torch.from_numpy(reducer.fit_transform(features.numpy()))}

    if cache_dir is None:
        return compute()["coords"].numpy()
    key = fingerprint(features, seed, n_epochs, n_neighbors)
    return cached(Path(cache_dir) / f"umap-{key}.pt", compute, {"inputs": key})["coords"].numpy()
