"""A second data set in another shape than KuaiRand, generated, with the lfm.yaml block that declares it.

A shop's log: CSV event files (epoch seconds, member ids of digits, string product ids, a string page as the
scenario, true/false task columns, columns the platform does not use), users as Parquet (string categoricals),
items as JSON lines and item statistics as CSV keyed by another column name. With `ShopSpec.odd_ids` member and
product ids are text holding a quote, a slash, a space and a non-ASCII letter (`o'brien/ü 10000`). Days are
calendar days in America/New_York; three days or more span the switch to daylight saving time (2024-03-10 has 23
hours). With `ShopSpec.ratings` the events are a tab-separated rating log instead: a 1-5 `rating` where the click
was (the task is derived, `rating >= 4`) and a `page_path` where the page was (the scenario is derived, its first
segment), declared by `RATING_EVENTS`. `ShopSpec.empty_days` leaves days without any event (a bursty log: no file
that day), after which the first `idle_after_empty` members act no more. The outcomes follow latent user and item factors (a propensity each, and tastes that interact) that the features are
noisy views of, so a model can learn them.
Nothing in the platform knows this shape: the config below is the whole adaptation.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

TZ = "America/New_York"
START = dt.date(2024, 3, 8)
PAGES = np.array(["home", "search", "cart"])
PAGE_SHARES = np.array([0.6, 0.3, 0.1])
FACTORS = 4

SCHEMA = {
    "user_key": "member_id",
    "item_key": "item_id",
    "scenario": "surface",
    "tasks": ["click", "purchase"],
    "timestamp": "ts",
    "date": None,  # the day is the event time's calendar day in `timezone`
    "timezone": TZ,
    "user_fields": [{"name": "member_id"}, {"name": "country"}, {"name": "age_band"},
                    {"name": "tenure_days", "kind": "numeric"}],
    "item_fields": [{"name": "item_id"}, {"name": "category"}, {"name": "brand"},
                    {"name": "price", "kind": "numeric"}, {"name": "views_7d", "kind": "numeric"}],
}

SOURCES = {
    "events": {"path": "events/ratings_*.csv", "format": "csv", "time_unit": "s",
               "columns": {"ts": {"raw": "event_ts", "type": "bigint"},
                           "member_id": {"raw": "member", "type": "string"},
                           "item_id": {"raw": "product", "type": "string"},
                           "surface": {"raw": "page", "type": "string"},
                           "click": {"raw": "clicked", "type": "boolean"},
                           "purchase": {"raw": "purchased", "type": "boolean"},
                           "dwell_s": "double"}},
    "users": {"path": "users.parquet", "format": "parquet",
              "columns": {"member_id": {"raw": "uid", "type": "string"}, "country": "string", "age_band": "string",
                          "tenure_days": "int"}},
    "items": {"path": "items.jsonl", "format": "json",
              "columns": {"item_id": {"raw": "sku", "type": "string"}, "category": "string", "brand": "string",
                          "price": "double"}},
    "item_statistics": {"path": "item_stats.csv", "format": "csv",
                        "columns": {"item_id": {"raw": "product", "type": "string"}, "views_7d": "int"}},
}

# The events of `ShopSpec.ratings`: a tab-separated rating log with no click and no scenario column.
RATING_EVENTS = {
    "path": "events/ratings_*.tsv", "format": "csv", "csv": {"delimiter": "\t"}, "time_unit": "s",
    "columns": {"ts": {"raw": "event_ts", "type": "bigint"},
                "member_id": {"raw": "member", "type": "string"},
                "item_id": {"raw": "product", "type": "string"},
                "surface": {"expr": "split(page_path, '/')[1]", "type": "string"},
                "click": {"expr": "rating >= 4", "type": "boolean"},
                "purchase": {"raw": "purchased", "type": "boolean"}},
}


@dataclass(frozen=True)
class ShopSpec:
    users: int = 300
    items: int = 120
    days: int = 6
    events_per_day: int = 1500
    seed: int = 0
    odd_ids: bool = False  # member and product ids like "o'brien/ü 10000": text a cast or a quote would break
    late_members: int = 0  # the last members have no event on the first day (their first is on a later one)
    ratings: bool = False  # events as a tab-separated rating log (RATING_EVENTS) instead of the click CSV
    empty_days: tuple[int, ...] = ()  # days (0-based) on which nobody acts: no event, no file
    idle_after_empty: int = 0  # the first members act on no day after an empty day (their state only decays)


def member_ids(spec: ShopSpec, members: np.ndarray) -> np.ndarray:
    """Member ids: 10000, 10001, ... (digits, declared string), or names with `'`, `/`, a space and `ü`."""
    ids = 10_000 + members.astype(np.int64)
    return np.char.add("o'brien/ü ", ids.astype(str)) if spec.odd_ids else ids


def _bucket(x: np.ndarray, n: int) -> np.ndarray:
    return np.searchsorted(np.quantile(x, np.linspace(0, 1, n + 1)[1:-1]), x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def sku(i: np.ndarray, odd: bool = False) -> np.ndarray:
    return np.char.add("d'or/é sku " if odd else "sku-", np.char.zfill(i.astype(str), 5))


def write_shop(out: Path, spec: ShopSpec = ShopSpec(), users_version: int = 1) -> dict[str, int]:
    """Write the shop's files under `out`; `users_version` 2 moves a third of the members to another country."""
    rng = np.random.default_rng(spec.seed)
    user_f = rng.normal(size=(spec.users, FACTORS))  # column 0: how much a member buys, column 1..: taste
    item_f = rng.normal(size=(spec.items, FACTORS))  # column 0: how popular an item is, column 1..: style
    page_w = np.abs(1 + 0.5 * rng.normal(size=(len(PAGES), FACTORS)))
    out.mkdir(parents=True, exist_ok=True)
    noisy_u = user_f + 0.4 * rng.normal(size=user_f.shape)
    countries = np.array(["US", "CA", "MX", "DE", "FR", "JP"])[_bucket(noisy_u[:, 0], 6)]
    if users_version == 2:
        moved = np.arange(spec.users) % 3 == 0
        countries = np.where(moved, "BR", countries)
    users = pd.DataFrame({"uid": member_ids(spec, np.arange(spec.users)), "country": countries,
                          "age_band": np.array(["18-24", "25-34", "35-44", "45+"])[_bucket(noisy_u[:, 1], 4)],
                          "tenure_days": np.exp(3 + noisy_u[:, 2]).astype(np.int32),
                          "signup_channel": "web"})  # a column the config does not declare: left out
    users.to_parquet(out / "users.parquet", index=False)
    noisy_i = item_f + 0.4 * rng.normal(size=item_f.shape)
    ids = sku(np.arange(spec.items), spec.odd_ids)
    with (out / "items.jsonl").open("w") as fh:
        for i in range(spec.items):
            fh.write(json.dumps({"sku": str(ids[i]), "category": f"c{_bucket(noisy_i[:, 0], 8)[i]}",
                                 "brand": f"b{_bucket(noisy_i[:, 1], 12)[i]}",
                                 "price": round(float(np.exp(2 + noisy_i[i, 2])), 2)}) + "\n")
    pd.DataFrame({"product": ids, "views_7d": rng.poisson(50, spec.items)}).to_csv(out / "item_stats.csv",
                                                                                 index=False)
    (out / "events").mkdir(exist_ok=True)
    tz = ZoneInfo(TZ)
    rows = 0
    for d in range(spec.days):
        day = START + dt.timedelta(days=d)
        begin = int(dt.datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())
        nxt = day + dt.timedelta(days=1)
        end = int(dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp())  # 23 h on 2024-03-10
        if d in spec.empty_days:
            continue
        n = spec.events_per_day
        u = rng.integers(0, spec.users, n)
        if d == 0 and spec.late_members:  # their first-day events go to the others: no CR state after day 0
            u = np.where(u >= spec.users - spec.late_members, u % (spec.users - spec.late_members), u)
        if spec.idle_after_empty and any(e < d for e in spec.empty_days):  # their events go to the others
            k = spec.idle_after_empty
            u = np.where(u < k, k + u % (spec.users - k), u)
        i = rng.integers(0, spec.items, n)
        p = rng.choice(len(PAGES), n, p=PAGE_SHARES)
        taste = (user_f[u, 1:] * page_w[p, 1:] * item_f[i, 1:]).sum(1) / np.sqrt(FACTORS - 1)
        score = 1.2 * user_f[u, 0] + 1.2 * item_f[i, 0] + 1.5 * taste - 0.3 * p - 0.5
        click = rng.random(n) < _sigmoid(score)
        purchase = click & (rng.random(n) < _sigmoid(score - 2.0))
        frame = pd.DataFrame({
            "event_ts": np.sort(rng.integers(begin, end, n)), "member": member_ids(spec, u), "product": ids[i],
            "page": PAGES[p], "clicked": np.where(click, "true", "false"),
            "purchased": np.where(purchase, "true", "false"),
            "dwell_s": np.round(rng.exponential(20, n), 1), "session": rng.integers(0, 1 << 30, n)})
        if spec.ratings:  # a rating of 4-5 where a click was, 1-3 elsewhere; the page as the first path segment
            rating = np.where(click, rng.integers(4, 6, n), rng.integers(1, 4, n))
            frame = frame.assign(page_path=np.char.add(np.char.add("/", PAGES[p]), "/feed"), rating=rating)
            frame = frame.drop(columns=["page", "clicked"])
            frame.to_csv(out / "events" / f"ratings_{day:%Y%m%d}.tsv", index=False, sep="\t")
        else:
            frame.to_csv(out / "events" / f"ratings_{day:%Y%m%d}.csv", index=False)
        rows += n
    return {"events": rows, "users": spec.users, "items": spec.items}


def shop_config(root: Path, data: Path, ratings: bool = False, **extra) -> dict:
    """The lfm.yaml of the shop (as a dict): schema, sources (string keys: Feast's entities follow them; with
    `ratings`, the rating log's events), small-data settings."""
    sources = {**SOURCES, "events": RATING_EVENTS} if ratings else SOURCES
    return {"lakehouse": str(root / "lakehouse"), "registry": {"path": str(root / "registry")},
            "schema": SCHEMA, "sources": {"root": str(data), **sources},
            "feast": {"repo_path": str(root / "feature_repo")}, **extra}


def days(n: int = ShopSpec.days) -> list[dt.date]:
    return [START + dt.timedelta(days=d) for d in range(n)]
