import os

os.environ.setdefault("MPLBACKEND", "Agg")

import random  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def seed():
    """A fresh random seed for each test; torch's global RNG is seeded with it.

    Tests draw new random inputs on every run. The seed is printed (pytest shows the
    captured output of a failing test); set NNGK_TEST_SEED to replay that failure.
    """
    value = int(os.environ.get("NNGK_TEST_SEED", random.SystemRandom().randrange(2**31)))
    print(f"NNGK_TEST_SEED={value}")
    torch.manual_seed(value)
    return value
