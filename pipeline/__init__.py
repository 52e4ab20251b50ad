"""The only layer that orchestrates: the daily chain (ingest -> refresh -> validate -> publish -> materialize), its
runs table and status, the demo and downstream training on released data."""
