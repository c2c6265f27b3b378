"""One module per input format (segment, native, mixpanel, amplitude): pydantic models of what a source sends.
Mapping to rows lives in ``shared.load``."""
