"""PyTorch models: the LFM, downstream models, transfer adapters, the checkpoint registry, and their training.

`blocks` holds the MLP, field embedding and cross layer every model is built from; `training/` pretrains the LFM
and trains downstream variants. Imports nothing from the other packages of lfm-export except `lfm` (config,
names, errors).
"""
