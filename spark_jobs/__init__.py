"""Spark jobs of lfm-export: the one SparkSession factory, ingest, synthetic data, refresh, backfill."""
