"""BigQuery write-path benchmark: the product's insertAll writer against the Storage Write API (see __main__)."""
