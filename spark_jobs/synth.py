"""Synthetic data in the KuaiRand release layout (the default `sources:` declaration), with structure a model can
learn and transfer.

Planted structure: latent user and item factors; user and item features that are noisy functions of those
factors (so features carry signal, and ids carry more); per-scenario affinity weights and biases; skewed scenario
sizes like the real log; four correlated tasks (click, long view, like, profile enter). Deterministic per seed,
and written in chunks with Arrow's CSV writer (5x pandas' `to_csv`), so 1M users x 10M events take about a minute
and a few GiB. `split_days` writes one complete layout folder per day (the day's log, the feature files
hard-linked), the way a daily drop arrives: ingesting one day then parses only that day's log.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from lfm.config.sources import Source, default_sources
from lfm.names import parse_ds

LAYOUT = default_sources()  # the file names and column lists this module writes

FACTORS = 8
# Share of events per scenario (tab), skewed like the real log: one big tab, four mid-sized, ten small.
TAB_SHARES = np.array([0.09, 0.74, 0.03, 0.004, 0.06, 0.004, 0.05, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004,
                       0.004, 0.004])
TAB_SHARES = TAB_SHARES / TAB_SHARES.sum()
_ACTIVITY = np.array(["full_active", "high_active", "middle_active", "low_active", "single_low_active",
                      "2_14_day_new", "30day_retention", "day_new", "UNKNOWN"])
_RANGES = np.array(["0", "(0,10]", "(10,50]", "(50,100]", "(100,150]", "(150,250]", "(250,500]", "500+"])
_UPLOAD = np.array(["ShortImport", "LongImport", "ShortCamera", "Kmovie", "LipsSync", "FollowShoot", "Web",
                    "PhotoCopy", "LongPicture", "ShareFromOtherApp", "PictureSet", "Intelligent", "LongCamera",
                    "UNKNOWN"])


@dataclass(frozen=True)
class SynthSpec:
    users: int
    items: int
    days: int
    events_per_day: int
    seed: int = 0
    start: str = "2022-04-25"
    timezone: str = "Asia/Shanghai"
    chunk_rows: int = 500_000


@dataclass(frozen=True)
class World:
    """The latent truth the data is drawn from."""

    user_f: np.ndarray  # (users, FACTORS)
    item_f: np.ndarray  # (items, FACTORS)
    user_bias: np.ndarray
    item_bias: np.ndarray
    user_activity: np.ndarray  # probability of each user appearing in an event
    item_popularity: np.ndarray
    tab_weights: np.ndarray  # (tabs, FACTORS) per-scenario affinity weights
    tab_bias: np.ndarray  # (tabs,)
    item_duration_ms: np.ndarray
    item_author: np.ndarray


def make_world(spec: SynthSpec) -> World:
    rng = np.random.default_rng([spec.seed, 0])
    tabs = len(TAB_SHARES)
    n_authors = max(1, spec.items // 3)
    author_f = rng.normal(size=(n_authors, FACTORS)).astype(np.float32)
    item_author = rng.integers(0, n_authors, spec.items)
    item_f = (0.7 * author_f[item_author] + 0.7 * rng.normal(size=(spec.items, FACTORS))).astype(np.float32)
    activity = rng.pareto(1.5, spec.users) + 0.05
    popularity = rng.pareto(1.2, spec.items) + 0.05
    return World(
        user_f=rng.normal(size=(spec.users, FACTORS)).astype(np.float32),
        item_f=item_f,
        user_bias=rng.normal(0, 0.5, spec.users).astype(np.float32),
        item_bias=rng.normal(0, 0.5, spec.items).astype(np.float32),
        user_activity=activity / activity.sum(),
        item_popularity=popularity / popularity.sum(),
        tab_weights=np.abs(1.0 + 0.6 * rng.normal(size=(tabs, FACTORS))).astype(np.float32),
        tab_bias=rng.normal(-0.5, 1.0, tabs).astype(np.float32),
        item_duration_ms=np.exp(rng.normal(10.5, 0.8, spec.items)).astype(np.int64),
        item_author=item_author,
    )


def _bucket(x: np.ndarray, n: int) -> np.ndarray:
    """Quantile bucket index in [0, n) of each value: features are coarse, noisy views of the factors."""
    edges = np.quantile(x, np.linspace(0, 1, n + 1)[1:-1])
    return np.searchsorted(edges, x)


def users_frame(spec: SynthSpec, world: World) -> pd.DataFrame:
    rng = np.random.default_rng([spec.seed, 1])
    u = world.user_f
    noisy = u + 0.5 * rng.normal(size=u.shape)
    n = spec.users
    df = pd.DataFrame({"user_id": np.arange(n)})
    df["user_active_degree"] = _ACTIVITY[_bucket(-world.user_activity, len(_ACTIVITY))]
    df["is_lowactive_period"] = 0
    df["is_live_streamer"] = np.where(noisy[:, 0] > 1.2, 1, -124)
    df["is_video_author"] = (noisy[:, 1] > 0.5).astype(int)
    for name, col in (("follow_user_num", 2), ("fans_user_num", 3), ("friend_user_num", 4), ("register_days", 5)):
        counts = np.exp(2 + 1.5 * noisy[:, col]).astype(np.int64)
        df[name] = counts
        df[f"{name}_range"] = _RANGES[_bucket(counts, len(_RANGES))]
    df = df.rename(columns={"register_days_range": "register_days_range"})
    for i in range(18):
        cardinality = [2, 7, 50, 1000, 16, 34, 3, 118, 454, 7, 5, 5, 2, 2, 2, 2, 2, 2][i]
        proj = noisy[:, i % FACTORS] + 0.3 * noisy[:, (i + 3) % FACTORS]
        values = _bucket(proj, cardinality)
        df[f"onehot_feat{i}"] = values.astype(float) if i == 4 or i >= 12 else values
    return df[LAYOUT.users.raw_names]


def items_frames(spec: SynthSpec, world: World) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng([spec.seed, 2])
    v = world.item_f + 0.5 * rng.normal(size=world.item_f.shape)
    n = spec.items
    upload = (parse_ds(spec.start) - dt.timedelta(days=15)).isoformat()
    basic = pd.DataFrame({
        "video_id": np.arange(n),
        "author_id": world.item_author * 7 + 1000,
        "video_type": np.where(v[:, 0] > 1.5, "AD", "NORMAL"),
        "upload_dt": upload,
        "upload_type": _UPLOAD[_bucket(v[:, 1], len(_UPLOAD))],
        "visible_status": 0.0,
        "video_duration": world.item_duration_ms.astype(float),
        "server_width": 720.0,
        "server_height": 1280.0,
        "music_id": rng.integers(9_000_000_000, 9_000_000_000 + max(2, n // 2), n),
        "music_type": _bucket(v[:, 2], 6).astype(float),
        "tag": (_bucket(v[:, 3], 60) + 1).astype(str),
    })
    stats = pd.DataFrame({"video_id": np.arange(n)})
    shows = world.item_popularity * 1e6
    for j, col in enumerate(LAYOUT.item_statistics.raw_names[1:]):
        stats[col] = shows * np.exp(-0.1 * j) * rng.uniform(0.8, 1.2, n)
    return basic[LAYOUT.items.raw_names], stats[LAYOUT.item_statistics.raw_names]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def events_chunk(spec: SynthSpec, world: World, day: dt.date, rows: int, chunk: int) -> pd.DataFrame:
    """`rows` events of `day`, drawn from the world with their own seed (so chunks are independent)."""
    rng = np.random.default_rng([spec.seed, 3, day.toordinal(), chunk])
    users = rng.choice(spec.users, rows, p=world.user_activity)
    tab = rng.choice(len(TAB_SHARES), rows, p=TAB_SHARES)
    # Tabs show different item mixes: each tab re-weights popularity by a per-tab preference direction.
    items = rng.choice(spec.items, rows, p=world.item_popularity)
    u, v = world.user_f[users], world.item_f[items]
    affinity = (u * world.tab_weights[tab] * v).sum(1) / np.sqrt(FACTORS)
    score = 1.5 * affinity + world.user_bias[users] + world.item_bias[items] + world.tab_bias[tab]
    click = rng.random(rows) < _sigmoid(score)
    long_view = click & (rng.random(rows) < _sigmoid(score - 0.5 - 0.3 * np.log(world.item_duration_ms[items] / 3e4)))
    like = click & (rng.random(rows) < _sigmoid(score - 4.0))
    profile = click & (rng.random(rows) < _sigmoid(0.5 * score + 0.8 * u[:, 0] - 4.0))
    tz = ZoneInfo(spec.timezone)
    day_start_ms = int(dt.datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() * 1000)
    offset_ms = np.sort(rng.integers(0, 86_400_000, rows))
    duration = world.item_duration_ms[items]
    play = np.where(click, (duration * rng.uniform(0.05, 1.5, rows)).astype(np.int64), 0)
    zeros = np.zeros(rows, dtype=np.int64)
    minutes = offset_ms // 60_000
    df = pd.DataFrame({
        "user_id": users, "video_id": items, "date": int(day.strftime("%Y%m%d")),
        "hourmin": (minutes // 60) * 100 + minutes % 60, "time_ms": day_start_ms + offset_ms,
        "is_click": click.astype(int), "is_like": like.astype(int), "is_follow": zeros, "is_comment": zeros,
        "is_forward": zeros, "is_hate": zeros, "long_view": long_view.astype(int), "play_time_ms": play,
        "duration_ms": duration, "profile_stay_time": np.where(profile, 5000, 0), "comment_stay_time": zeros,
        "is_profile_enter": profile.astype(int), "is_rand": zeros, "tab": tab,
    })
    return df[LAYOUT.events.raw_names]


def _write_csv(df: pd.DataFrame, sink, header: bool = True) -> None:
    """A frame as CSV through Arrow (values as pandas writes them, strings quoted, header unquoted)."""
    options = pa_csv.WriteOptions(include_header=header, quoting_header="none")
    pa_csv.write_csv(pa.Table.from_pandas(df, preserve_index=False), sink, options)


def file_name(src: Source) -> str:
    """The file a source's glob matches, e.g. `log_standard_*.csv` -> `log_standard_synth.csv`."""
    return src.path.replace("*", "synth")


FEATURE_FILES = tuple(file_name(src) for src in (LAYOUT.users, LAYOUT.items, LAYOUT.item_statistics))
LOG_FILE = file_name(LAYOUT.events)


def _write_log(spec: SynthSpec, world: World, path: Path, days: list[dt.date], progress, written: int) -> int:
    with path.open("wb") as fh:
        fh.write((",".join(LAYOUT.events.raw_names) + "\n").encode())
        for day in days:
            remaining, chunk = spec.events_per_day, 0
            while remaining > 0:
                rows = min(remaining, spec.chunk_rows)
                _write_csv(events_chunk(spec, world, day, rows, chunk), fh, header=False)
                remaining -= rows
                written += rows
                chunk += 1
            if progress:
                progress(day, written)
    return written


def write_synthetic(spec: SynthSpec, out: Path, progress=None, split_days: bool = False) -> dict[str, int]:
    """Write the four layout files under `out` (or, with `split_days`, under `out/<YYYY-MM-DD>/` per day);
    returns row counts per file."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    world = make_world(spec)
    users = users_frame(spec, world)
    basic, stats = items_frames(spec, world)
    for name, frame in zip(FEATURE_FILES, (users, basic, stats)):
        _write_csv(frame, str(out / name))
    start = parse_ds(spec.start)
    days = [start + dt.timedelta(days=d) for d in range(spec.days)]
    if not split_days:
        written = _write_log(spec, world, out / LOG_FILE, days, progress, 0)
        return {"events": written, "users": len(users), "items": len(basic)}
    written = 0
    for day in days:
        folder = out / day.isoformat()
        folder.mkdir(exist_ok=True)
        for name in FEATURE_FILES:
            (folder / name).unlink(missing_ok=True)
            (folder / name).hardlink_to(out / name)
        written = _write_log(spec, world, folder / LOG_FILE, [day], progress, written)
    for name in FEATURE_FILES:  # the day folders hold them
        (out / name).unlink()
    return {"events": written, "users": len(users), "items": len(basic)}
