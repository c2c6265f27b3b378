"""One module per input format: pydantic models of what a source sends. Mapping to rows lives in ``shared.load``."""
