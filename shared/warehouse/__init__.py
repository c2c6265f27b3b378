"""BigQuery: table schemas, typed rows, the region check and the streaming writer."""
