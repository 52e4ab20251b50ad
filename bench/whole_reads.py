"""What whole-entity reads cost: `serving.online.get_online_features` (Feast's answer between two one-step reads)
against Feast's own `get_online_features(...).to_dict()`, the same requests interleaved in one process.

    .venv/bin/python -m bench.whole_reads [--store sqlite|redis] [--entities 5000] [--items-per-request 100]

No load runs beside the reads, so this is the price of the check when nothing changes (the usual case); under a
load a request is read again only when a write landed between Feast's per-view reads (tests/integration/serving/
test_whole_entities.py). Prints p50/p99 per path and the ratio to Feast's own read.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def pcts(xs: list[float]) -> tuple[float, float]:
    return float(np.percentile(xs, 50)) * 1e3, float(np.percentile(xs, 99)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    ap.add_argument("--entities", type=int, default=5_000)
    ap.add_argument("--items-per-request", type=int, default=100)
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()

    from feature_repo.specs import service_name
    from feature_repo.store import open_store
    from serving.online import get_online_features
    from tests.support.online_store import SPEC, T1, configured, write
    from tests.support.redis_local import start_redis

    server = start_redis() if args.store == "redis" else None
    try:
        cfg = configured(Path(tempfile.mkdtemp()), args.store, "int64", server)
        write(cfg, list(range(args.entities)), T1, seed=1, batch_rows=1_000)
        store = open_store(cfg)
        service = store.get_feature_service(service_name(SPEC.id))
        user, item = cfg.schema.user_key, cfg.schema.item_key
        rng = np.random.default_rng(3)
        reqs = [{user: [int(rng.integers(args.entities))] * args.items_per_request,
                 item: rng.integers(0, args.entities, args.items_per_request).tolist()}
                for _ in range(args.requests + 20)]
        paths = {
            "feast": lambda rows: store.get_online_features(features=service, entity_rows=rows).to_dict(),
            "whole": lambda rows: get_online_features(cfg, rows, service=service.name, store=store),
        }
        lat: dict[str, list[float]] = {p: [] for p in paths}
        order = list(paths)
        for i, rows in enumerate(reqs):  # interleaved, random order: load and cache effects hit both alike
            rng.shuffle(order)
            for p in order:
                t0 = time.perf_counter()
                paths[p](rows)
                if i >= 20:
                    lat[p].append(time.perf_counter() - t0)
        base = pcts(lat["feast"])
        print(f"{args.store}: {args.requests} requests of 1 user + {args.items_per_request} items, all four views")
        print("| path | p50 ms | p99 ms | p50 vs Feast | p99 vs Feast |\n|---|---:|---:|---:|---:|")
        for p, label in (("feast", "Feast get_online_features(service).to_dict()"),
                         ("whole", "lfm get_online_features: Feast's answer between two one-step reads")):
            p50, p99 = pcts(lat[p])
            print(f"| {label} | {p50:.2f} | {p99:.2f} | {p50 / base[0]:.2f}x | {p99 / base[1]:.2f}x |")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
