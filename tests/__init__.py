"""Tests: `unit/` (no Spark), `integration/` (a real SparkSession, Delta, Feast, GE, Redis), `support/` (helpers)."""
