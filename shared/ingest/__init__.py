"""Ingest stage: a bucket object -> batches of raw lines on the raw-events topic (see pipeline.py)."""
