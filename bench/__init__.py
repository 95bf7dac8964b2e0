"""Conveyor's benchmarks: every figure is a ratio against the blog pattern, same run."""
