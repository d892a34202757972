"""nngk_lab.kernel.bank: the exact chunked neighbour search against brute force, and the feature bank."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

from nngk_lab.kernel.bank import FeatureBank, embed
from nngk_lab.kernel.search import drop_self, nearest_neighbours
from nngk_lab.files import atomic_save
from nngk_lab.data.folders import ImageSamples
from nngk_lab.errors import CheckpointError
from nngk_lab.kernel.search import GROUPED_TOPK_MIN_CENTRES_PER_NEIGHBOUR, smallest


def brute_force_sq_dists(queries, centres, exclude_self=False):
    """All (Q, N) squared distances as explicit differences in float64; self-pairs are inf."""
    d = (queries.double().unsqueeze(1) - centres.double().unsqueeze(0)).square().sum(-1)
    if exclude_self:
        d.fill_diagonal_(float("inf"))
    return d


def check_against_brute_force(queries, centres, k, exclude_self, chunk_size, exact, where):
    """The returned distances are the k smallest, sorted; each returned index really is at
    its returned distance; no index repeats in a row; the query itself is never returned."""
    d, idx = nearest_neighbours(queries, centres, k, exclude_self=exclude_self, chunk_size=chunk_size)
    assert d.shape == idx.shape == (queries.shape[0], k), where
    assert idx.dtype == torch.long
    brute = brute_force_sq_dists(queries, centres, exclude_self)
    expected = brute.sort(dim=1).values[:, :k]
    true_of_returned = brute.gather(1, idx)
    if exact:
        assert torch.equal(d.double(), expected), where
        assert torch.equal(true_of_returned, d.double()), where
    else:
        # ||q||^2 + ||c||^2 - 2 q.c rounds to a few eps of ||q||^2 + ||c||^2 per dimension.
        scale = queries.double().square().sum(1, keepdim=True) + centres.double().square().sum(1).max()
        tol = 4 * queries.shape[1] * torch.finfo(d.dtype).eps * scale
        assert ((d.double() - expected).abs() <= tol).all(), where
        assert ((true_of_returned - d.double()).abs() <= tol).all(), where
    assert (d[:, 1:] >= d[:, :-1]).all(), where
    assert all(len(set(row)) == k for row in idx.tolist()), where
    if exclude_self:
        assert not (idx == torch.arange(queries.shape[0]).unsqueeze(1)).any(), where


def _chunk_sizes(num_queries):
    return [1, 3, 7, num_queries + 5, None]


def test_nearest_neighbours_match_brute_force_on_random_sizes(seed):
    for trial in range(4):
        num_q, num_c, dim = (int(torch.randint(lo, hi, ())) for lo, hi in [(1, 30), (2, 40), (1, 9)])
        queries = torch.randn(num_q, dim, dtype=torch.float64) * 3
        centres = torch.randn(num_c, dim, dtype=torch.float64) * 3
        for chunk in _chunk_sizes(num_q):
            for k in sorted({1, int(torch.randint(1, num_c + 1, ())), num_c}):
                where = f"seed={seed} Q={num_q} N={num_c} D={dim} k={k} chunk={chunk}"
                check_against_brute_force(queries, centres, k, False, chunk, exact=False, where=where)


def test_nearest_neighbours_exclude_self_on_random_sizes(seed):
    for trial in range(4):
        n, dim = int(torch.randint(2, 35, ())), int(torch.randint(1, 9, ()))
        points = torch.randn(n, dim, dtype=torch.float64)
        for chunk in _chunk_sizes(n):
            for k in sorted({1, n - 1}):
                where = f"seed={seed} N={n} D={dim} k={k} chunk={chunk}"
                check_against_brute_force(points, points, k, True, chunk, exact=False, where=where)
        # With k = N - 1 every other centre appears exactly once.
        _, idx = nearest_neighbours(points, points, n - 1, exclude_self=True, chunk_size=3)
        for i, row in enumerate(idx.tolist()):
            assert sorted(row) == [j for j in range(n) if j != i], f"seed={seed}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nearest_neighbours_with_ties_and_duplicate_centres(dtype, seed):
    """Integer coordinates make every distance exact and many equal; duplicated centres sit
    at distance 0 from each other, but a query's own centre is still never returned."""
    n = int(torch.randint(12, 30, ()))
    points = torch.randint(0, 3, (n, 2)).to(dtype)
    points[[0, 1, -1]] = 5.0  # three copies of a point no other can equal
    for chunk in _chunk_sizes(n):
        for k in sorted({1, int(torch.randint(1, n, ())), n - 1}):
            where = f"seed={seed} N={n} k={k} chunk={chunk} dtype={dtype}"
            check_against_brute_force(points, points, k, True, chunk, exact=True, where=where)
            check_against_brute_force(points, points, k, False, chunk, exact=True, where=where)
    d, idx = nearest_neighbours(points, points, 2, exclude_self=True)
    assert d[0].tolist() == [0.0, 0.0] and set(idx[0].tolist()) == {1, n - 1}


def test_nearest_neighbours_by_groups_match_brute_force(seed):
    """Rows long enough for the CPU's grouped top-k (N >= 40 (k + 1)): random sizes, with
    and without self, float32 and float64, integer coordinates (exact distances, many
    ties, duplicated centres) and continuous ones."""
    for trial in range(6):
        k = int(torch.randint(1, 6, ()))
        n = int(torch.randint(GROUPED_TOPK_MIN_CENTRES_PER_NEIGHBOUR * (k + 1), 700, ()))
        dim = int(torch.randint(1, 6, ()))
        dtype = (torch.float32, torch.float64)[trial % 2]
        exact = trial >= 3
        points = (torch.randint(0, 3, (n, dim)) if exact else torch.randn(n, dim) * 3).to(dtype)
        for chunk in (7, None):
            where = f"seed={seed} N={n} D={dim} k={k} chunk={chunk} {dtype} exact={exact}"
            check_against_brute_force(points, points, k, True, chunk, exact=exact, where=where)
            check_against_brute_force(points[:9], points, k, False, chunk, exact=exact, where=where)


def _check_smallest(block, k, where):
    """The k smallest entries of each row, sorted, each at its returned column, no column twice."""
    d, idx = smallest(block, k)
    expected = block.double().sort(dim=1).values[:, :k]
    assert torch.equal(d.double(), expected), where
    assert torch.equal(block.gather(1, idx), d), where
    assert all(len(set(row)) == k for row in idx.tolist()), where


def test_grouped_smallest_matches_a_full_sort(seed):
    """Random widths (most not a multiple of the group count, so leftover columns are
    candidates too), ties, huge and infinite values, and the smallest entries placed in
    the leftover columns or all in one group."""
    for trial in range(20):
        k = int(torch.randint(1, 12, ()))
        n = int(torch.randint(GROUPED_TOPK_MIN_CENTRES_PER_NEIGHBOUR * k, 60 * k + 50, ()))
        block = [torch.randn(5, n), torch.randint(0, 4, (5, n)).float(), torch.randn(5, n) * 1e30][trial % 3]
        block[0, -3:] = -1e38  # smallest in the leftover columns (or the last group)
        block[1, : n // 2] = float("inf")
        block[2] = 1.0  # every entry tied
        g = round((n / k) ** 0.5)
        block[3, torch.arange(g) * (n // g)] = -5.0  # g of the smallest in the same group
        block[4, k - 1:] = float("inf")  # the k-th smallest is infinite
        _check_smallest(block, k, f"seed={seed} trial={trial} k={k} N={n}")
        _check_smallest(block.double(), k, f"seed={seed} trial={trial} k={k} N={n} float64")


def test_grouped_smallest_ranks_nan_last_like_topk(seed):
    k, n = 4, 400
    block = torch.randn(3, n)
    block[0, 5] = block[1, torch.randperm(n)[:50]] = float("nan")
    d, idx = smallest(block, k)
    expected = torch.topk(block, k, dim=1, largest=False, sorted=True).values
    assert torch.equal(d, expected) and not d.isnan().any()
    assert torch.equal(block.gather(1, idx), d)


def test_drop_self_removes_each_querys_own_index_or_else_the_farthest():
    """Queries 3, 4, 5 (a chunk starting at row 3): row 0 holds its own index, row 1 does
    not (duplicates pushed it out), row 2 has it first."""
    indices = torch.tensor([[5, 3, 7], [2, 6, 8], [5, 1, 0]])
    sq_dists = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 2.0, 3.0]])
    d, i = drop_self(sq_dists, indices, first_row=3)
    assert i.tolist() == [[5, 7], [2, 6], [1, 0]]
    assert d.tolist() == [[0.0, 1.0], [0.0, 0.0], [2.0, 3.0]]


def test_nearest_neighbours_bad_arguments_raise():
    points = torch.randn(6, 3)
    for k, exclude in [(7, False), (6, True), (0, False), (-1, False)]:
        with pytest.raises(ValueError, match="k = "):
            nearest_neighbours(points, points, k, exclude_self=exclude)
    with pytest.raises(ValueError, match="exclude_self"):
        nearest_neighbours(points[:4], points, 2, exclude_self=True)
    with pytest.raises(ValueError, match="same D"):
        nearest_neighbours(torch.randn(4, 2), points, 2)


IMAGE_SIDE = 6


class PixelModel(nn.Module):
    """A fixed linear map of the pixels, after a dropout layer: the embedding of an image is
    a known function of it, and only in eval mode is it deterministic."""

    def __init__(self, dim_out=4):
        super().__init__()
        self.dropout = nn.Dropout(0.5)
        self.linear = nn.Linear(3 * IMAGE_SIDE * IMAGE_SIDE, dim_out)

    def forward(self, images):
        return self.linear(self.dropout(images.flatten(1)))


@pytest.fixture
def image_dataset(tmp_path, seed):
    """3 classes x 5 random RGB images, as an index-returning ImageSamples dataset."""
    rng = np.random.default_rng(seed)
    samples = []
    for label in range(3):
        folder = tmp_path / "images" / f"class_{label:03d}"
        folder.mkdir(parents=True)
        for j in range(5):
            path = folder / f"im_{j}.png"
            Image.fromarray(rng.integers(0, 256, (IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)).save(path)
            samples.append((str(path), label))
    return ImageSamples(samples, T.ToTensor())


def _embed_one_by_one(model, dataset):
    model.eval()
    with torch.no_grad():
        return torch.cat([model(dataset[i][0].unsqueeze(0)) for i in range(len(dataset))])


@pytest.mark.parametrize("was_training", [True, False])
def test_bank_refresh_through_a_shuffled_loader_puts_each_centre_at_its_index(image_dataset, was_training, seed):
    model = PixelModel()
    model.train(was_training)
    loader = DataLoader(image_dataset, batch_size=4, shuffle=True)
    bank = FeatureBank.build(model, loader, "cpu", num_neighbours=5, epoch=3, progress=False, chunk_size=4)
    assert model.training == was_training and model.dropout.training == was_training
    expected = _embed_one_by_one(model, image_dataset)
    torch.testing.assert_close(bank.features, expected, rtol=1e-5, atol=1e-6, msg=f"seed={seed}")
    assert torch.equal(bank.labels, image_dataset.labels)
    assert len(bank) == len(image_dataset) and bank.num_neighbours == 5 and bank.refreshed_at_epoch == 3
    torch.testing.assert_close(bank.sq_norms, bank.features.square().sum(1))
    assert not (bank.neighbours == torch.arange(len(bank)).unsqueeze(1)).any()
    brute = brute_force_sq_dists(bank.features, bank.features, exclude_self=True)
    torch.testing.assert_close(brute.gather(1, bank.neighbours), brute.sort(dim=1).values[:, :5],
                               rtol=1e-5, atol=1e-5, msg=f"seed={seed}")


def test_embed_restores_train_mode_and_needs_every_index(image_dataset):
    model = PixelModel().train()
    features, labels = embed(model, DataLoader(image_dataset, batch_size=6, shuffle=True), "cpu", progress=False)
    assert model.training
    assert features.shape == (len(image_dataset), 4) and torch.equal(labels, image_dataset.labels)
    missing = DataLoader(image_dataset, batch_size=4, sampler=list(range(0, len(image_dataset), 2)))
    with pytest.raises(RuntimeError, match="every dataset index"):
        embed(model, missing, "cpu", progress=False)
    assert model.training


def test_bank_save_load_round_trip(image_dataset, tmp_path):
    model = PixelModel()
    bank = FeatureBank.build(model, DataLoader(image_dataset, batch_size=4), "cpu", num_neighbours=3, epoch=7,
                             progress=False)
    path = tmp_path / "run" / "bank.pt"
    bank.save(path)
    loaded = FeatureBank.load(path)
    assert torch.equal(loaded.features, bank.features)
    assert torch.equal(loaded.labels, bank.labels)
    assert torch.equal(loaded.neighbours, bank.neighbours)
    assert torch.equal(loaded.sq_norms, bank.sq_norms)
    assert loaded.refreshed_at_epoch == 7
    restored = FeatureBank.from_state_dict(bank.state_dict())
    assert torch.equal(restored.neighbours, bank.neighbours)


def test_bank_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        FeatureBank.load(tmp_path / "missing.pt")
    atomic_save({"kind": "something else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="FeatureBank"):
        FeatureBank.load(tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        FeatureBank.load(tmp_path / "garbage.pt")
    atomic_save({"kind": "nngk_lab.FeatureBank", "features": torch.zeros(2, 2)}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="incomplete"):
        FeatureBank.load(tmp_path / "partial.pt")


def test_move_centres_matches_a_loop_and_keeps_squared_norms_current(seed):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(9, 4, generator=g)
    bank = FeatureBank(features.clone(), torch.arange(9) % 3, torch.zeros(9, 2, dtype=torch.long))
    index, fresh, m = torch.tensor([7, 0, 4]), torch.randn(3, 4, generator=g) * 1e3, 0.25
    bank.move_centres(index, fresh, m)
    expected = features.double()
    for row, i in enumerate(index.tolist()):
        expected[i] = m * expected[i] + (1 - m) * fresh[row].double()
    assert torch.allclose(bank.features.double(), expected, rtol=1e-6)
    assert torch.allclose(bank.sq_norms.double(), expected.square().sum(1), rtol=1e-5)
    bank.move_centres(torch.tensor([1]), fresh[:1], 0.0)  # momentum 0: the new embedding itself
    assert torch.equal(bank.features[1], fresh[0])


def test_moved_centres_of_a_normalising_network_stay_on_the_unit_sphere(seed):
    g = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)
    fresh = torch.nn.functional.normalize(torch.randn(2, 5, generator=g, dtype=torch.float64), dim=1)
    fresh[1] = -features[3]  # opposite directions: the plain mean would be the zero vector
    fresh[1, 0] += 1e-6
    bank = FeatureBank(features.clone(), torch.arange(6) % 2, torch.zeros(6, 2, dtype=torch.long))
    bank.move_centres(torch.tensor([0, 3]), fresh, 0.5, unit=True)
    expected = 0.5 * features[[0, 3]] + 0.5 * fresh
    expected = expected / expected.norm(dim=1, keepdim=True)
    assert torch.allclose(bank.features[[0, 3]], expected, atol=1e-6)
    assert torch.allclose(bank.features.norm(dim=1), torch.ones(6, dtype=torch.float64))
    assert torch.allclose(bank.sq_norms, torch.ones(6, dtype=torch.float64))
    assert torch.equal(bank.features[[1, 2, 4, 5]], features[[1, 2, 4, 5]])
