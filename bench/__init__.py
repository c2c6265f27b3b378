"""Benchmarks, one package per stage: python -m bench.<stage>."""
