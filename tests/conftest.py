import os

os.environ.setdefault("MPLBACKEND", "Agg")

# Triton decides when it is imported whether its library functions (tl.sum, tl.max, ...)
# run in its CPU interpreter, so it is imported here with TRITON_INTERPRET=1 set.
# tests/kernel/test_fused_loss.py sets the variable again to run the fused loss's kernels on the
# CPU; elsewhere it is unset, so training in the other tests uses the plain PyTorch loss.
_interpret = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"
try:
    import triton.language  # noqa: E402, F401
except ImportError:  # no Triton on this platform: the fused-loss tests fail and say so
    pass
if _interpret is None:
    del os.environ["TRITON_INTERPRET"]
else:
    os.environ["TRITON_INTERPRET"] = _interpret

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
