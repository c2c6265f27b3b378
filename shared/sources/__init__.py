"""One module per input format (segment, native, mixpanel, amplitude, csv_export): pydantic models of what a source
sends. Mapping to rows lives in ``shared.load``."""
