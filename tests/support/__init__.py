"""Test helpers: a throwaway redis-server, synthetic embedding tables, planted data."""
