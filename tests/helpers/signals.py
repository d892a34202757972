"""Ctrl-C or SIGTERM arriving in the middle of a training step, for the interrupt tests."""

import signal

from nngk_lab.training import parts as parts_module


def signal_at_steps(monkeypatch, steps: set[int], signum=signal.SIGINT):
    """Send ``signum`` to this process during training steps ``steps`` (1-based), from
    inside the network's forward pass, as a Ctrl-C would arrive at any moment."""
    real = parts_module.build_parts
    calls = {"n": 0}

    def hook(module, args):
        if module.training:  # training steps only, not bank refreshes
            calls["n"] += 1
            if calls["n"] in steps:
                signal.raise_signal(signum)

    def build_parts(*args, **kwargs):
        parts = real(*args, **kwargs)
        parts.model.register_forward_pre_hook(hook)
        return parts

    monkeypatch.setattr(parts_module, "build_parts", build_parts)
