"""Audiences (and, later, campaigns): who a tenant sends to, defined in files and computed in BigQuery."""
