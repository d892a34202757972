"""The seeds of the generators that make a run reproducible and resumable: each is a
function of the run's seed and of where it is drawn (epoch, then step or image, then
process), so that a run resumed mid-epoch draws exactly what it would have drawn."""

from __future__ import annotations

# Primes, so that no two positions of a run share a seed in practice; the first three
# uses (epoch, image or step, process) are those of every seed the kit has drawn, so saved
# runs and results keep their numbers.
MIX_MULTIPLIERS = (1_000_003, 1_000_033, 4099)
# torch.Generator.manual_seed takes [0, 2**64); a CPU generator (mt19937) uses only the low
# 32 bits, which the reduction keeps.
SEED_RANGE = 2**64


def mix_seed(seed: int, *positions: int) -> int:
    """``((seed * 1_000_003 + positions[0]) * 1_000_033 + positions[1]) * 4099 + ...``,
    as far as ``positions`` go (up to three), reduced into torch's seed range."""
    if len(positions) > len(MIX_MULTIPLIERS):
        raise ValueError(f"mix_seed takes at most {len(MIX_MULTIPLIERS)} positions, got {len(positions)}")
    value = seed
    for multiplier, position in zip(MIX_MULTIPLIERS, positions):
        value = value * multiplier + position
    return value % SEED_RANGE
