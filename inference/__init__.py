"""Frozen-model extraction of UR/IR/CR from Arrow batches, CR aggregation math, representation analysis."""
