"""backend="auto": which backend it picks, when it calibrates, its cache, and that its
answers are those of the backend it picked. Timings are injected: nothing here times
a real calibration except the one small test of time_backends itself."""

import json
import sys
import time

import pytest
import torch

from nngk_lab.kernel import search
from nngk_lab.kernel import search_choice
from nngk_lab.device import cpu_description
from nngk_lab.kernel.search import nearest_neighbours, time_backends
from nngk_lab.kernel.search_choice import choose_backend, rule_backend


class FakeCalibration:
    """Stands in for time_backends: returns the given seconds and counts its calls."""

    def __init__(self, **seconds):
        self.seconds, self.calls = seconds, []

    def __call__(self, num_centres, num_queries, dim, k):
        self.calls.append((num_centres, num_queries, dim, k))
        return dict(self.seconds)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache folder, and every search counted as large enough to calibrate."""
    pytest.importorskip("faiss")
    monkeypatch.setenv("NNGK_LAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(search_choice, "SMALL_SEARCH_MULTIPLY_ADDS", 0)
    return tmp_path / "cache" / search_choice.CACHE_FILE


def never(*args):
    raise AssertionError("calibrated when it should not have")


@pytest.mark.parametrize("winner, loser", [("faiss", "torch"), ("torch", "faiss")])
def test_auto_picks_the_faster_backend_once_and_returns_its_answer(cache, monkeypatch, winner, loser, seed):
    fake = FakeCalibration(**{winner: 1.0, loser: 2.0})
    monkeypatch.setattr(search, "time_backends", fake)
    points = torch.randn(120, 6)
    for exclude_self in (True, False):
        auto = nearest_neighbours(points, points, 5, exclude_self=exclude_self)
        forced = nearest_neighbours(points, points, 5, exclude_self=exclude_self, backend=winner)
        assert torch.equal(auto[0], forced[0]) and torch.equal(auto[1], forced[1])
    assert fake.calls == [(search_choice.CALIBRATION_CENTRES, search_choice.CALIBRATION_QUERIES, 6, 5)]
    entry = search_choice.cached_choice(6, 5)
    assert entry == {"backend": winner, "seconds": {winner: 1.0, loser: 2.0}}
    assert list(json.loads(cache.read_text()).values()) == [entry]


def test_each_dimension_and_k_is_calibrated_once(cache, monkeypatch):
    fake = FakeCalibration(torch=1.0, faiss=2.0)
    monkeypatch.setattr(search, "time_backends", fake)
    for dim, k in [(4, 3), (4, 3), (8, 3), (4, 7), (8, 3)]:
        nearest_neighbours(torch.randn(50, dim), torch.randn(60, dim), k)
    assert [c[2:] for c in fake.calls] == [(4, 3), (8, 3), (4, 7)]
    assert len(json.loads(cache.read_text())) == 3


def test_a_large_k_is_calibrated_on_enough_centres(cache):
    fake = FakeCalibration(torch=1.0, faiss=2.0)
    big_k = search_choice.CALIBRATION_CENTRES
    choose_backend(torch.empty(10, 3), torch.empty(big_k + 1, 3), big_k, calibrate=fake)
    assert fake.calls == [(2 * big_k, search_choice.CALIBRATION_QUERIES, 3, big_k)]


def test_a_corrupt_cache_is_recalibrated_and_rewritten(cache, monkeypatch):
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    fake = FakeCalibration(torch=2.0, faiss=1.0)
    x = torch.randn(30, 4)
    assert choose_backend(x, x, 3, calibrate=fake) == "faiss"
    assert len(fake.calls) == 1 and search_choice.cached_choice(4, 3)["backend"] == "faiss"


def test_an_unwritable_cache_falls_back_to_the_rule_without_timing(tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("NNGK_LAB_CACHE_DIR", str(blocker / "cache"))  # a folder inside a file: never writable
    monkeypatch.setattr(search_choice, "SMALL_SEARCH_MULTIPLY_ADDS", 0)
    for vendor, expected in [("AuthenticAMD", "faiss"), ("GenuineIntel", "torch")]:
        monkeypatch.setattr(search_choice, "cpu_description", lambda vendor=vendor: {
            "vendor": vendor, "model": "m", "vector_extensions": []})
        x = torch.randn(30, 4)
        assert choose_backend(x, x, 3, calibrate=never) == expected


def test_a_faiss_that_does_not_import_means_torch_and_no_cache_entry(cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    monkeypatch.setattr(search_choice, "_faiss_version", lambda: "1.0")  # as if its files were there
    x = torch.randn(30, 4)
    # A calibration as small as the problem: the real one, with faiss failing to import.
    monkeypatch.setattr(search, "time_backends", lambda *shape: {"faiss": search.faiss_search(x, x, 3)})
    assert nearest_neighbours(x, x, 3)[1].shape == (30, 3)
    assert not cache.exists()


def test_the_rule():
    assert rule_backend("AuthenticAMD") == "faiss"
    assert rule_backend("GenuineIntel") == rule_backend("") == rule_backend("0x41") == "torch"


def test_torch_without_calibrating_where_faiss_cannot_do_as_well(cache, monkeypatch):
    x = torch.randn(30, 4)
    assert choose_backend(x.double(), x.double(), 3, calibrate=never) == "torch"  # faiss is float32 only
    meta = torch.empty(30, 4, device="meta")  # stands for a GPU: not the CPU
    assert choose_backend(meta, meta, 3, calibrate=never) == "torch"
    monkeypatch.setattr(search_choice, "SMALL_SEARCH_MULTIPLY_ADDS", 30 * 30 * 4 + 1)
    assert choose_backend(x, x, 3, calibrate=never) == "torch"  # too small to matter
    monkeypatch.setattr(search_choice, "SMALL_SEARCH_MULTIPLY_ADDS", 0)
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    assert choose_backend(x, x, 3, calibrate=never) == "torch"
    assert not cache.exists()


def test_small_searches_never_calibrate(monkeypatch, tmp_path):
    """The default threshold keeps every search of the test suite's size off the clock."""
    monkeypatch.setenv("NNGK_LAB_CACHE_DIR", str(tmp_path))
    x = torch.randn(1500, 512)
    assert choose_backend(x, x, 200, calibrate=never) == "torch"


def test_the_cache_key_names_the_machine_the_libraries_and_the_problem():
    key = search_choice.machine_key("1.2.3", 512, 200)
    cpu = cpu_description()
    for part in [cpu["model"], " ".join(cpu["vector_extensions"]), torch.__version__, "faiss 1.2.3",
                 f"{torch.get_num_threads()} threads", "D=512 k=200"]:
        assert part in key


def test_time_backends_times_both(seed, monkeypatch):
    """Each backend runs twice, in turns, on the problem of the size asked for, and the
    faster of its two runs is kept: the backends are slowed down by known delays (a
    different one per run) and the seconds must be those delays, give or take the
    searches themselves."""
    pytest.importorskip("faiss")
    delays = {"torch": [0.30, 0.10], "faiss": [0.02, 0.25]}
    calls = []

    def slowed(name, real):
        def run(queries, centres, k):
            calls.append((name, tuple(queries.shape), tuple(centres.shape), k))
            found = real(queries, centres, k)
            time.sleep(delays[name][sum(c[0] == name for c in calls) - 1])
            # The real search of the real problem: the naive nearest centres.
            naive = torch.cdist(queries.double(), centres.double()).square().topk(k, largest=False)
            assert torch.allclose(found[0].double(), naive.values, rtol=1e-4, atol=1e-4)
            return found
        return run

    monkeypatch.setattr(search, "torch_search", slowed("torch", search.torch_search))
    monkeypatch.setattr(search, "faiss_search", slowed("faiss", search.faiss_search))
    seconds = time_backends(300, 20, 8, 5)
    assert [c[0] for c in calls] == ["torch", "faiss", "torch", "faiss"]
    assert all(c[1:] == ((20, 8), (300, 8), 5) for c in calls)
    assert set(seconds) == {"torch", "faiss"}
    assert 0.10 <= seconds["torch"] < 0.10 + 0.18 and 0.02 <= seconds["faiss"] < 0.02 + 0.18, seconds


def test_cpu_description_reads_x86_and_arm_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
                   "flags\t\t: fpu sse sse2 ssse3 sse4_1 avx avx2 fma smep avx512f\n\n"
                   "processor\t: 1\nvendor_id\t: other\n")
    assert cpu_description(x86) == {"vendor": "AuthenticAMD", "model": "AMD EPYC 7B13",
                                    "vector_extensions": ["avx", "avx2", "avx512f", "fma", "sse", "sse2",
                                                          "sse4_1", "ssse3"]}
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve sve2\nCPU implementer\t: 0x41\n")
    assert cpu_description(arm)["vector_extensions"] == ["asimd", "sve", "sve2"]
    assert cpu_description(arm)["vendor"] == "0x41"
    missing = cpu_description(tmp_path / "absent")
    assert missing["vendor"] == "" and missing["vector_extensions"] == [] and missing["model"] is not None
