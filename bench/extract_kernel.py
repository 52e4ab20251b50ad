"""The refresh's UR kernel alone, in this process: what one Spark task's Python side costs per row.

    PYTHONPATH=. .venv/bin/python bench/extract_kernel.py --world /tmp/lfm_daily_scale/u1000000 [--batches 40]

Reads the users staged by `bench/daily_scale.py` (`<world>/floor_inputs/users`, the rows the refresh extracts) in
Arrow batches of `refresh.arrow_batch_rows` and runs `inference.kernels.tower_batches` over them with one torch
thread, as each Spark task does (`refresh.torch_threads_per_task`), timing the encoding and the tower apart.
Against the Spark probe's rate in the same world, the rest of a task's time is Spark's (the Arrow exchange with
the JVM, reading and writing rows).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", type=Path, required=True, help="a world folder of bench/daily_scale.py")
    p.add_argument("--batches", type=int, default=40, help="Arrow batches timed")
    args = p.parse_args(argv)

    import pyarrow.dataset as pads
    import torch

    from inference.extract import Extractor
    from inference.kernels import tower_batches
    from lfm.config import load_config
    from pipeline.spec import resolve_export

    cfg = load_config(str(args.world / "lfm.yaml"))
    extractor = Extractor(resolve_export(cfg).model_dir, threads=1, batch_rows=cfg.refresh.arrow_batch_rows,
                          schema=cfg.schema)
    ck = extractor.checkpoint  # loaded before the clock starts, as a Spark worker does before its first batch
    batches = list(pads.dataset(str(args.world / "floor_inputs" / "users"))
                   .to_batches(batch_size=cfg.refresh.arrow_batch_rows))[: args.batches]
    rows = sum(b.num_rows for b in batches)
    torch.set_num_threads(1)
    encode = model = 0.0
    with torch.inference_mode():
        for b in batches:
            t0 = time.perf_counter()
            fields = ck.encoders.encode_user(b)  # (rows, user fields)
            t1 = time.perf_counter()
            ck.model.user_vectors(fields)  # (rows, ur_dim)
            encode, model = encode + t1 - t0, model + time.perf_counter() - t1
    t0 = time.perf_counter()
    for _ in tower_batches(iter(batches), extractor, cfg.schema.user_key, "ur", "user"):
        pass
    whole = time.perf_counter() - t0
    print(f"{rows:,} users in {len(batches)} batches, one thread: encoding {encode:.2f} s, tower {model:.2f} s, "
          f"the whole kernel (with the output lists) {whole:.2f} s = {rows / whole:,.0f} rows/s per task")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
