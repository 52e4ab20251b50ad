"""Whole entities on Feast's read path: an online answer is checked against a one-step read before it goes out.

Feast reads a request view by view (one query per feature view, in its sqlite and its Redis store alike), so a
materialize that commits between two of those reads hands out an entity whose UR is one release's and whose CR(u)
another's (measured: 5,700 of 100,000 entities while a writer alternated two releases). A release lands whole
(one sqlite transaction; one atomic script step per Redis entity), and `OnlineReader` reads all the views of an
entity in one step (one SQL statement; one HMGET per entity). So each Feast answer is compared with a one-step
read of the same entities taken just before and one taken just after it: an entity whose views equal one of them
*is* a whole state of that entity; one that equals neither had a load commit between two of Feast's reads, and
the request is read again, `ATTEMPTS` times at most, then refused as busy (`OnlineChanging`).
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from feature_repo.specs import key_of, service_name, view_name
from lfm.config import KeyType, LfmConfig
from lfm.contract import EMBEDDING_TABLES, ITEM_TABLES, USER_TABLES, ExportSpec, side_of
from serving.errors import BadEntityRows, ServingError

ATTEMPTS = 20
BACKOFF_S = 0.002


class OnlineChanging(ServingError):
    """Every read of a request disagreed with the one-step read that followed it: loads kept committing."""


@dataclass(frozen=True)
class Asked:
    """What one online request reads: one export's tables and, per side that has tables, the ids."""

    spec: ExportSpec  # the export of the asked views (from their tags)
    tables: tuple[str, ...]
    names: Mapping[str, str]  # answer column name (short or `view__feature`) -> table
    user_ids: list | None
    item_ids: list | None


def asked_views(store, views: Sequence[str]) -> tuple[ExportSpec, dict[str, str]]:
    """(export spec, view name -> table) of the requested views, from the views' tags in the (cached) Feast
    registry: a lookup reads no registry file."""
    by_name = {fv.name: fv for fv in store.list_feature_views(allow_cache=True)}
    tags = [by_name[v].tags or {} for v in views if v in by_name]
    specs = {t.get("export_spec") for t in tags}
    if len(tags) != len(views) or len(specs) != 1 or any(t.get("table") not in EMBEDDING_TABLES for t in tags):
        raise ServingError(f"views {list(views)} are not one registered export's embedding views")
    return ExportSpec.from_json(specs.pop()), {v: t["table"] for v, t in zip(views, tags)}


def example_id(cfg: LfmConfig, side: str):
    """An id of the side's key type, for the example bodies of messages."""
    number = 42 if side == "user" else 7
    return number if cfg.key_type(side) == KeyType.int64 else f"{side[0]}{number}"


def example_body(cfg: LfmConfig, spec: ExportSpec, sides: Sequence[str] = ("user", "item")) -> str:
    """A request body that reads the export's views of `sides`: its feature service for both sides, else the side's
    `view:feature` refs (UR and CR(u) of a user; IR and CR(i) of an item) with that side's key alone."""
    tables = [t for t in EMBEDDING_TABLES if side_of(t) in sides]
    entities = {key_of(cfg, t): [example_id(cfg, side_of(t))] for t in tables}
    if len(set(sides)) == 2:
        return json.dumps({"feature_service": service_name(spec.id), "entities": entities}, ensure_ascii=False)
    return json.dumps({"features": [f"{view_name(t, spec.id)}:{t}" for t in tables], "entities": entities},
                      ensure_ascii=False)


def entity_ids(cfg: LfmConfig, spec: ExportSpec, tables: Sequence[str],
               entities: Mapping[str, Sequence]) -> tuple[list | None, list | None]:
    """The user and item ids of a request, refusing unknown, missing, empty, null and ragged entity keys with a
    message naming the key and a body that would be answered."""
    s = cfg.schema
    keys = {"user": s.user_key, "item": s.item_key}
    unknown = sorted(set(entities) - set(keys.values()))
    if unknown:
        raise BadEntityRows(f"unknown entity key(s) {unknown}: this platform's keys are {s.user_key!r} (users) and "
                            f"{s.item_key!r} (items); send e.g. {example_body(cfg, spec)}")
    needed = [side for side in ("user", "item") if side in {side_of(t) for t in tables}]
    missing = [keys[side] for side in needed if keys[side] not in entities]
    if missing:
        asked = [t for t in tables if keys[side_of(t)] in missing]
        sent = [side for side in ("user", "item") if keys[side] in entities]
        raise BadEntityRows(f"the request asks {asked}, keyed by {missing}, but sends no such ids: send e.g. "
                            f"{example_body(cfg, spec, needed)}"
                            + "".join(f", or for the {side}'s vectors alone {example_body(cfg, spec, [side])}"
                                      for side in sent))
    lengths = {k: len(v) for k, v in entities.items()}
    if len(set(lengths.values())) > 1:
        raise BadEntityRows(f"entity key lists differ in length {lengths}: one row per position, every key "
                            "the same length")
    empty = [keys[side] for side in needed if not entities[keys[side]]]
    nulls = [keys[side] for side in needed if any(v is None for v in entities[keys[side]])]
    if empty or nulls:
        raise BadEntityRows(f"entity key(s) {empty or nulls} hold {'no ids' if empty else 'null ids'}: send at least "
                            f"one id per key, none null, e.g. {example_body(cfg, spec, needed)}")
    users = list(entities[s.user_key]) if "user" in needed else None
    items = list(entities[s.item_key]) if "item" in needed else None
    return users, items


def columns(rows: Sequence[Mapping] | Mapping[str, Sequence]) -> dict[str, list]:
    """Feast's two entity-row shapes (a list of dicts, a dict of lists) as a dict of lists."""
    if isinstance(rows, Mapping):
        return {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in rows.items()}
    names = list(dict.fromkeys(k for r in rows for k in r))
    missing = [n for n in names if any(n not in r for r in rows)]
    if missing:
        raise BadEntityRows(f"entity rows differ in their keys: some lack {missing}; give every row the same keys")
    return {n: [r[n] for r in rows] for n in names}


def plan(cfg: LfmConfig, store, views: Sequence[str], entities: Mapping[str, Sequence]) -> Asked:
    """What a request for `views` with `entities` (a dict of lists) reads, its keys checked."""
    spec, table_of = asked_views(store, views)
    tables = tuple(table_of.values())
    names = {**{t: t for t in tables}, **{f"{v}__{t}": t for v, t in table_of.items()}}
    users, items = entity_ids(cfg, spec, tables, entities)
    return Asked(spec, tables, names, users, items)


Snapshot = dict[str, tuple[np.ndarray, np.ndarray]]  # table -> ((n, dim) vectors, (n,) found), one-step read


def snapshot(asked: Asked, reader) -> Snapshot:
    """The asked tables of the asked entities in one step of the store (`OnlineReader.lookup`)."""
    user_tables = [t for t in asked.tables if t in USER_TABLES]
    item_tables = [t for t in asked.tables if t not in USER_TABLES]
    sides = reader.lookup(user_ids=asked.user_ids if user_tables else None,
                          item_ids=asked.item_ids if item_tables else None,
                          user_tables=user_tables, item_tables=item_tables)
    return {t: (side.vectors[t], side.found[t]) for side in sides for t in side.vectors}


def _equal_rows(values: Sequence, vectors: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Per row: does the answer's value (None where missing) equal the snapshot's? One array compare per column."""
    out = np.zeros(len(found), dtype=bool)
    if len(values) != len(found):
        return out
    present = np.array([v is not None for v in values], dtype=bool)
    out[~present] = ~found[~present]
    rows = np.flatnonzero(present & found)
    if rows.size:
        got = [values[i] for i in rows]
        if all(len(v) == vectors.shape[1] for v in got):
            out[rows] = (np.asarray(got, dtype=np.float32) == vectors[rows]).all(axis=1)
    return out


def whole(asked: Asked, answer: Mapping[str, Sequence], *snapshots: Snapshot) -> bool:
    """True when each entity's views in `answer` all equal that entity's views in one of `snapshots`.

    Taken just before and just after the answer's read, the two snapshots accept every entity that a load wrote
    at most once meanwhile, whether before or after Feast read it; one whose views Feast read on both sides of a
    write matches neither and is refused."""
    by_table = {asked.names[n]: values for n, values in answer.items() if n in asked.names}
    if set(by_table) != set(asked.tables):
        return False
    for side in (USER_TABLES, ITEM_TABLES):
        tables = [t for t in asked.tables if t in side]
        if not tables:
            continue
        ok = np.zeros(len(by_table[tables[0]]), dtype=bool)
        for snap in snapshots:
            same = np.ones_like(ok)
            for t in tables:
                same &= _equal_rows(by_table[t], *snap[t])
            ok |= same
        if not ok.all():
            return False
    return True


def pauses() -> Iterator[float]:
    """The wait after each of a request's `ATTEMPTS` reads that was refused (doubling from BACKOFF_S, to 50 ms)."""
    pause = BACKOFF_S
    for _ in range(ATTEMPTS):
        yield pause
        pause = min(pause * 2, 0.05)


BUSY = (f"the online store changed under each of {ATTEMPTS} reads of this request (a materialize is loading a "
        "release): retry in a moment")


def read_whole(asked: Asked, read: Callable[[], Mapping[str, Sequence]], snap: Callable[[], Snapshot]):
    """`read()` between two snapshots, again until its answer holds whole entities (`whole`); that answer."""
    for pause in pauses():
        before = snap()
        answer = read()
        if whole(asked, answer, before, snap()):
            return answer
        time.sleep(pause)
    raise OnlineChanging(BUSY)


def http_columns(data: Mapping) -> dict[str, list]:
    """Feast's HTTP answer (`metadata.feature_names` beside `results[i].values`) as column name -> values."""
    names = (data.get("metadata") or {}).get("feature_names") or []
    return {n: r.get("values") for n, r in zip(names, data.get("results") or [])}


class Readers:
    """One reader per export for a long-lived server (`open_reader(spec)`, an `OnlineReader`), each used under its
    own lock: a reader holds one store connection."""

    def __init__(self, open_reader: Callable[[ExportSpec], object]) -> None:
        self.open_reader = open_reader
        self._readers: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def snapshot(self, asked: Asked) -> Snapshot:
        with self._lock:
            if asked.spec.id not in self._readers:
                self._readers[asked.spec.id] = (self.open_reader(asked.spec), threading.Lock())
            reader, lock = self._readers[asked.spec.id]
        with lock:
            return snapshot(asked, reader)
