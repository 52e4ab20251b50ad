"""PyTorch models: the LFM, downstream models, transfer adapters, the checkpoint registry.

Imports nothing from the other packages of lfm-export except `lfm` (config, names, errors).
"""
