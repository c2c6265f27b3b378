"""landline: the library every deployed function shares (ingest, load, warehouse, push)."""

__version__ = "0.1.0"
