"""The neighbour search's backends against a float64 brute-force reference."""

import sys

import pytest
import torch

from nngk_lab.bank import FeatureBank, nearest_neighbours
from nngk_lab.errors import ConfigError


def brute_force(queries, centres, k, exclude_self=False):
    d = torch.cdist(queries.double(), centres.double()).square()
    if exclude_self:
        d.fill_diagonal_(float("inf"))
    dist, idx = d.sort(dim=1)
    return dist[:, :k], idx[:, :k]


def random_points(n, dim, scale=1.0, seed=None):
    g = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**31)
    return scale * torch.randn(n, dim, generator=g)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_faiss_backend_matches_reference(scale):
    pytest.importorskip("faiss")
    centres, queries = random_points(300, 16, scale), random_points(40, 16, scale)
    d, i = nearest_neighbours(queries, centres, 7, backend="faiss")
    d_ref, i_ref = brute_force(queries, centres, 7)
    assert torch.equal(i, i_ref)
    torch.testing.assert_close(d.double(), d_ref, rtol=1e-4, atol=1e-4 * scale**2)


def test_faiss_backend_excludes_self_even_among_duplicates():
    pytest.importorskip("faiss")
    base = random_points(50, 8)
    centres = torch.cat([base, base[:10], base[:10]])  # rows 0-9 have two exact copies each
    d, i = nearest_neighbours(centres, centres, 5, exclude_self=True, backend="faiss")
    rows = torch.arange(centres.shape[0]).unsqueeze(1)
    assert i.shape == (70, 5) and not (i == rows).any()
    d_ref, _ = brute_force(centres, centres, 5, exclude_self=True)
    torch.testing.assert_close(d.double(), d_ref, rtol=1e-4, atol=1e-5)
    assert (d[:10, :2] < 1e-4).all()  # each duplicated row finds its two copies first


def test_faiss_and_torch_backends_agree_through_the_bank():
    pytest.importorskip("faiss")
    features = random_points(200, 12)
    bank = FeatureBank(features, torch.zeros(200, dtype=torch.long))
    bank.update_neighbours(9, backend="faiss")
    via_faiss = bank.neighbours
    bank.update_neighbours(9, backend="torch")
    assert torch.equal(via_faiss, bank.neighbours)


def test_missing_faiss_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    x = random_points(20, 4)
    with pytest.raises(ConfigError, match="pip install faiss-cpu"):
        nearest_neighbours(x, x, 3, backend="faiss")


def test_unknown_backend_is_refused():
    x = random_points(20, 4)
    with pytest.raises(ConfigError, match="not one of torch, faiss"):
        nearest_neighbours(x, x, 3, backend="annoy")
