"""Benchmarks: methods, the runner, reports and the latency profile."""
