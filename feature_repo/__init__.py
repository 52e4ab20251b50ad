"""The Feast repository of lfm-export, laid out like Feast's example repos.

- `entities.py`, `data_sources.py`, `feature_views.py`, `feature_services.py`: the definitions, built per model
  version from a small `VersionSpec` (specs.py) so that each version's embedding space gets its own views.
- `store.py`: the `feature_store.yaml` equivalent, generated from `lfm.yaml` (registry: Feast's SQL registry on
  sqlite; offline: Spark over the Delta tables; online: sqlite, or Redis by config).
- `register.py` (`lfm register`), `materialize.py` (`lfm materialize`, gated by the quality status),
  `offline.py` (`lfm training-set`), `online.py` (lookups), `server.py` (`lfm serve`),
  `retrieval.py` (`lfm retrieve`, FAISS over a day's item vectors).
Modules import Feast, Spark and FAISS lazily where they can, so `lfm --help` stays fast.
"""
