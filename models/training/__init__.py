"""Training: pretraining the LFM (`pretrain`, `sweep`) and training downstream transfer variants (`transfer`).

Downstream modules in the order a run uses them: `variants` (what to train), `setup` (sizes and settings from
the config), `encoding` (frames -> batches), `fit` (the loop with early stopping), `recall` (retrieval
metrics), `transfer` (one variant end to end). `seeding` and `metrics` serve both kinds of training.
"""
