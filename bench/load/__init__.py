"""Loader benchmark: python -m bench.load [--quick]."""
