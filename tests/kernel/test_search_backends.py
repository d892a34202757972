"""The neighbour search's backends against a float64 brute-force reference."""

import sys

import pytest
import torch

from nngk_lab.kernel.bank import FeatureBank
from nngk_lab.kernel.search import nearest_neighbours
from nngk_lab.errors import ConfigError


def brute_force(queries, centres, k, exclude_self=False):
    d = torch.cdist(queries.double(), centres.double()).square()
    if exclude_self:
        d.fill_diagonal_(float("inf"))
    dist, idx = d.sort(dim=1)
    return dist[:, :k], idx[:, :k]


def random_points(n, dim, scale=1.0):
    return scale * torch.randn(n, dim)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_faiss_backend_matches_reference(scale, seed):
    """The k smallest distances, sorted, each at its returned index; float32 rounding
    (a few eps of ||q||^2 + ||c||^2 per dimension) is all that may differ."""
    pytest.importorskip("faiss")
    centres, queries = random_points(300, 16, scale), random_points(40, 16, scale)
    d, i = nearest_neighbours(queries, centres, 7, backend="faiss")
    d_ref, _ = brute_force(queries, centres, 7)
    true_of_returned = torch.cdist(queries.double(), centres.double()).square().gather(1, i)
    tol = 4 * 16 * torch.finfo(torch.float32).eps * 2 * (queries.square().sum(1, keepdim=True).double()
                                                        + centres.square().sum(1).max().double())
    assert ((d.double() - d_ref).abs() <= tol).all()
    assert ((true_of_returned - d.double()).abs() <= tol).all()
    assert (d[:, 1:] >= d[:, :-1]).all()
    assert all(len(set(row)) == 7 for row in i.tolist())


def test_faiss_backend_excludes_self_even_among_duplicates(seed):
    pytest.importorskip("faiss")
    base = random_points(50, 8)
    centres = torch.cat([base, base[:10], base[:10]])  # rows 0-9 have two exact copies each
    d, i = nearest_neighbours(centres, centres, 5, exclude_self=True, backend="faiss")
    rows = torch.arange(centres.shape[0]).unsqueeze(1)
    assert i.shape == (70, 5) and not (i == rows).any()
    d_ref, _ = brute_force(centres, centres, 5, exclude_self=True)
    torch.testing.assert_close(d.double(), d_ref, rtol=1e-4, atol=1e-4)
    assert (d[:10, :2] < 1e-4).all()  # each duplicated row finds its two copies first


def test_faiss_and_torch_backends_agree_through_the_bank(seed):
    pytest.importorskip("faiss")
    features = random_points(200, 12)
    bank = FeatureBank(features, torch.zeros(200, dtype=torch.long))
    bank.update_neighbours(9, backend="faiss")
    via_faiss = bank.neighbours
    bank.update_neighbours(9, backend="torch")
    # Same neighbours up to float32 near-ties: compare their true distances.
    true = torch.cdist(features.double(), features.double()).square()
    torch.testing.assert_close(true.gather(1, via_faiss), true.gather(1, bank.neighbours), rtol=1e-5, atol=1e-5)


def test_missing_faiss_says_how_to_install_it(monkeypatch, seed):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    x = random_points(20, 4)
    with pytest.raises(ConfigError, match="pip install faiss-cpu"):
        nearest_neighbours(x, x, 3, backend="faiss")


def test_unknown_backend_is_refused(seed):
    x = random_points(20, 4)
    with pytest.raises(ConfigError, match="not one of auto, torch, faiss"):
        nearest_neighbours(x, x, 3, backend="annoy")


@pytest.mark.parametrize("exclude_self", [True, False])
def test_torch_and_faiss_give_the_same_neighbours_where_distances_are_exact(exclude_self, seed):
    """Integer coordinates make every distance exact in float32 and many of them tie: both
    backends return the same sorted distances, each index at its distance, so the lists
    differ at most in the order (and choice) of equally distant centres. N is large enough
    for the torch backend's grouped top-k."""
    pytest.importorskip("faiss")
    points = torch.randint(-3, 4, (int(torch.randint(300, 600, ())), 4)).float()
    points[[0, 1, 2]] = 9.0  # three copies of a point no other can equal
    queries = points if exclude_self else points[:50]
    brute = torch.cdist(queries.double(), points.double()).square().round()
    if exclude_self:
        brute.fill_diagonal_(float("inf"))
    results = {b: nearest_neighbours(queries, points, 6, exclude_self=exclude_self, backend=b)
               for b in ("torch", "faiss")}
    for d, i in results.values():
        assert torch.equal(d.double(), brute.sort(dim=1).values[:, :6])
        assert torch.equal(brute.gather(1, i), d.double())
        assert all(len(set(row)) == 6 for row in i.tolist())
    assert torch.equal(results["torch"][0], results["faiss"][0])
    if exclude_self:
        assert set(results["torch"][1][0, :2].tolist()) == set(results["faiss"][1][0, :2].tolist()) == {1, 2}
