"""``meshctl bench``: drive the Rust load generator, show progress, render results."""

from meshctl.loadgen.runner import run_bench

__all__ = ["run_bench"]
