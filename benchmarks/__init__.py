"""Benchmarks of coursepkg against trusted implementations (the book page imports them)."""
