"""The contract every part relies on: table names, partition columns, the end of a day, the export spec.

Each fact has its one home here (docs/contracts.md describes them for readers):
- table names of the lakehouse, grouped by role;
- `day_end(D)` = T_D, the instant day D ends in the schema's time zone (D+1 00:00 local): the `event_timestamp` of
  every exported row of D, the reference time of D's CR state;
- `ExportSpec`: what defines one embedding space. Vectors exported under two specs are never mixed: the spec's
  `id` is stored in every exported row (`export_id`, a partition column), every commit's metadata, every gate
  verdict and release, and names the Feast views that serve it;
- `DayModel`: the registered version that makes one day of an export (the frozen model, or the version of a
  lineage trained through the day before), recorded in the day's rows, candidate and release.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass
from zoneinfo import ZoneInfo

from lfm.names import BadInput, check_model_version, parse_ds

# --- tables -----------------------------------------------------------------------------------------------------
EVENTS, USERS, ITEMS = "events", "users", "items"
INPUT_TABLES = (EVENTS, USERS, ITEMS)
FEATURE_TABLES = (USERS, ITEMS)  # one snapshot per ingest, partitioned by VALID_FROM; day D reads the one in force
VALID_FROM = "valid_from"  # the first event day a feature snapshot holds for
UR, IR, CR_USER, CR_ITEM = "ur", "ir", "cr_user", "cr_item"
EMBEDDING_TABLES = (UR, IR, CR_USER, CR_ITEM)  # table name = vector column = Feast feature name
USER_TABLES, ITEM_TABLES = (UR, CR_USER), (IR, CR_ITEM)
CR_TABLES = (CR_USER, CR_ITEM)
STATE_TABLES = ("cr_user_state", "cr_item_state")  # the CR decay chain, one per side; never served
EXPORT_TABLES = EMBEDDING_TABLES + STATE_TABLES  # what one refresh writes: a candidate
INGEST_LOG = "ingest_log"  # one row per day an ingest wrote: its events (0: a day with no events, an empty day)
REFRESH_LOG = "refresh_log"  # one row per complete refresh: the candidate's table versions
GATE_STATUS = "gate_status"  # one row per (gate run, table): the verdict and the version it checked
RELEASES = "releases"  # one row per publish or withdrawal of (ds, export): what readers may read
RUNS = "runs"  # one row per pipeline step attempt
SERVING_DIR = "_serving"  # under an object-store lakehouse: the serving state every driver shares (Feast, ANN, receipts)
RECORD_TABLES = (INGEST_LOG, REFRESH_LOG, GATE_STATUS, RELEASES, RUNS)
PARTITION_BY = ("ds", "export_id")  # embedding and state tables: a refresh swaps whole (day, export) folders
EXPORT_ID = "export_id"
TS = "event_timestamp"


def side_of(table: str) -> str:
    """'user' or 'item': which entity an embedding or state table is keyed by."""
    if table in USER_TABLES or table == STATE_TABLES[0]:
        return "user"
    if table in ITEM_TABLES or table == STATE_TABLES[1]:
        return "item"
    raise BadInput(f"{table!r} is not an embedding or state table; use one of {list(EXPORT_TABLES)}")


# --- the day ----------------------------------------------------------------------------------------------------

def day_start(ds: str | dt.date, timezone: str) -> dt.datetime:
    """D 00:00 in `timezone`, as an aware UTC datetime."""
    d = parse_ds(ds)
    return dt.datetime(d.year, d.month, d.day, tzinfo=ZoneInfo(timezone)).astimezone(dt.timezone.utc)


def day_end(ds: str | dt.date, timezone: str) -> dt.datetime:
    """T_D: the instant day D ends in `timezone` (D+1 00:00 local), as an aware UTC datetime.

    Computed from the calendar, so a day around a DST change is 23 or 25 hours long, as it really is.
    """
    return day_start(parse_ds(ds) + dt.timedelta(days=1), timezone)


def day_end_ms(ds: str | dt.date, timezone: str) -> int:
    """T_D in epoch milliseconds."""
    return int(round(day_end(ds, timezone).timestamp() * 1000))


def local_day(ts: dt.datetime, timezone: str) -> dt.date:
    """The calendar day `ts` falls on in `timezone` (naive datetimes are UTC)."""
    aware = ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)
    return aware.astimezone(ZoneInfo(timezone)).date()


def snapshot_day(ts: dt.datetime, timezone: str) -> dt.date:
    """The day D whose snapshot time T_D (`day_end`) is `ts`: the local day before the one `ts` opens."""
    return local_day(ts, timezone) - dt.timedelta(days=1)


# --- the export spec --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportSpec:
    """Everything that defines the space of one export: resolved once per run, passed to every step.

    Two exports of one model version with another CR layer, decay, normalisation, state TTL or data schema are two
    spaces: their `id`s differ, so their rows, chains, verdicts, releases and Feast views never meet.

    `cadence_days` None: the frozen model `model_version` makes every day. N: the export is the lineage rooted at
    `model_version` (`models.lineage`), continued every N days; day D is made by the lineage's newest version whose
    seen days end before D, and the CR chain carries over from one version to the next (docs/contracts.md).
    """

    model_version: str
    cr_layer: str
    ur_dim: int
    ir_dim: int
    cr_dim: int
    tau_hours: float
    normalisation: str
    state_ttl_days: int | None
    schema_hash: str
    cadence_days: int | None = None

    def __post_init__(self) -> None:
        check_model_version(self.model_version)
        if not self.cr_layer or not all(c.isalnum() or c in "_.:-" for c in self.cr_layer) or len(self.cr_layer) > 64:
            raise BadInput(f"bad CR layer name {self.cr_layer!r}: use letters, digits, '_', '.', ':' or '-'")
        for name in ("ur_dim", "ir_dim", "cr_dim"):
            if int(getattr(self, name)) < 1:
                raise BadInput(f"export of model {self.model_version}: {name} must be >= 1, got {getattr(self, name)}")
        if self.tau_hours <= 0:
            raise BadInput(f"export of model {self.model_version}: tau_hours must be positive, got {self.tau_hours}")
        if self.cadence_days is not None and int(self.cadence_days) < 1:
            raise BadInput(f"export of model {self.model_version}: updates.every_days must be >= 1, got "
                           f"{self.cadence_days}")

    @property
    def lineage(self) -> bool:
        """The export follows a lineage of versions (continued every `cadence_days`), not one frozen model."""
        return self.cadence_days is not None

    @property
    def id(self) -> str:
        """16 hex characters of sha256 over the canonical JSON of every field."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def to_json(self) -> str:
        """Canonical JSON; a frozen export leaves `cadence_days` out, so its id is the one it had before lineages."""
        fields = {k: v for k, v in asdict(self).items() if not (k == "cadence_days" and v is None)}
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "ExportSpec":
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError) as err:
            raise BadInput(f"unreadable export spec {text[:200]!r}: {err}") from None

    def dim(self, table: str) -> int:
        return {UR: self.ur_dim, IR: self.ir_dim, CR_USER: self.cr_dim, CR_ITEM: self.cr_dim}[table]

    def layer(self, table: str) -> str:
        """The CR layer a table's rows carry ('' for UR/IR, which have none)."""
        return self.cr_layer if table in CR_TABLES else ""

    def describe(self) -> str:
        ttl = f"{self.state_ttl_days}d" if self.state_ttl_days else "none"
        model = (f"lineage of {self.model_version} updated every {self.cadence_days}d" if self.lineage
                 else f"model {self.model_version}")
        return (f"export {self.id} ({model}, CR layer {self.cr_layer}, tau {self.tau_hours:g}h, "
                f"{self.normalisation}, state TTL {ttl}, schema {self.schema_hash[:8]})")

    def differences(self, other: "ExportSpec") -> list[str]:
        """The fields in which two specs differ, as 'name a -> b'."""
        a, b = asdict(self), asdict(other)
        return [f"{k} {a[k]} -> {b[k]}" for k in a if a[k] != b[k]]


@dataclass(frozen=True)
class DayModel:
    """The registered version that makes one day of an export and its verified checkpoint folder."""

    version: str
    model_dir: str

    def __post_init__(self) -> None:
        check_model_version(self.version)


def schema_hash(schema) -> str:
    """A stable hash of the data schema (a pydantic model), part of every export's identity."""
    text = json.dumps(schema.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
