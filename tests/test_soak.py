"""The CI-sized soak: one minute of the real loop at full speed; memory and descriptors must not grow."""

from __future__ import annotations

from bench.soak import soak


def test_one_minute_soak_does_not_leak():
    lines = []
    result = soak(minutes=1.0, every=5.0, out=lines.append)
    samples = result["samples"]
    assert samples[-1]["frames"] > 100 and samples[-1]["decisions"] > 0
    assert result["ok"], "\n".join(lines)
