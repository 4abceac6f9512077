"""The live table: row keys, column families and their garbage-collection rules (docs/live.md).

One table (``DAIHUO_LIVE_TABLE``, default ``live``). ``#`` separates the parts of a row key; it
cannot occur in an id (``shared.contract`` ids are ``[A-Za-z0-9._:@-]``).

=================================  ==============================================================
row key                            content
=================================  ==============================================================
``r#<stream>``                     room state. ``s``: stream info, slots, the item on stage;
                                   ``o``: showcase per item (availability, price, stock)
``m#<stream>#<minute>#<shard>``    one minute of a room (``minute`` = epoch minutes of the event
                                   time, 9 digits; ``shard`` = crc32(event_id) mod shards, 2
                                   digits). ``x``: the claimed event ids; ``c``: the counters of
                                   exactly those events (sums)
``u#<stream>#<shard>``             unique viewers of a room (``shard`` = crc32(user_id) mod
                                   shards). ``x``: ``<step>:<user>`` flags; ``c``: ``u:<step>``
``v#<stream>#<user>``              a viewer's session in the room. ``e``: ``<type>:<item>`` cells,
                                   one version per event (cell time = event time)
=================================  ==============================================================

Families: ``x`` claims (GC: max age ``dedupe_s``, the dedupe look-back; cell time = when it was
claimed), ``c`` an aggregate family of int64 sums (``AddToCell``; GC: max age ``retention_s``,
cell time = the minute / the stream's day), ``s`` and ``o`` state (last write by event time wins;
GC: 1 version or older than the retention), ``e`` session events (GC: ``session_events`` versions
per column or older than the retention).
"""

from __future__ import annotations

import zlib

from shared.live.config import LiveConfig

CLAIMS, COUNTERS, ITEMS, STATE, SHOWCASE, SESSION = "x", "c", "i", "s", "o", "e"


def room_key(stream: str) -> bytes:
    return f"r#{stream}".encode()


def minute_key(stream: str, minute: int, shard: int) -> bytes:
    return f"m#{stream}#{minute:09d}#{shard:02d}".encode()


def minute_prefix(stream: str) -> bytes:
    return f"m#{stream}#".encode()


def unique_key(stream: str, shard: int) -> bytes:
    return f"u#{stream}#{shard:02d}".encode()


def unique_prefix(stream: str) -> bytes:
    return f"u#{stream}#".encode()


def viewer_key(stream: str, user: str) -> bytes:
    return f"v#{stream}#{user}".encode()


def shard_of(key: str, shards: int) -> int:
    return zlib.crc32(key.encode()) % shards


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key that starts with ``prefix``."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def gc_rules(cfg: LiveConfig) -> dict[str, dict]:
    """Per family: ``max_age_s`` and/or ``max_versions`` (a cell goes when either says so) and
    whether the family is an int64-sum aggregate. infra/live.tf declares the same (tested)."""
    return {
        CLAIMS: {"max_age_s": cfg.dedupe_s, "max_versions": 1, "aggregate": False},
        COUNTERS: {"max_age_s": cfg.retention_s, "aggregate": True},
        ITEMS: {"max_age_s": cfg.retention_s, "max_versions": 1, "aggregate": False},
        STATE: {"max_age_s": cfg.retention_s, "max_versions": 1, "aggregate": False},
        SHOWCASE: {"max_age_s": cfg.retention_s, "max_versions": 1, "aggregate": False},
        SESSION: {"max_age_s": cfg.retention_s, "max_versions": cfg.session_events, "aggregate": False},
    }


def _admin_client(cfg: LiveConfig):
    """The table-admin API client. Through the classic client, which honours
    ``BIGTABLE_EMULATOR_HOST`` (an insecure channel to the emulator); the GAPIC one alone does not."""
    import warnings

    from google.cloud import bigtable

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return bigtable.Client(project=cfg.project, admin=True).table_admin_client


def ensure_table(cfg: LiveConfig | None = None) -> bool:
    """Create the table with its families if it does not exist (the emulator, tests, the local
    stack; in the cloud Terraform creates it). True when it was created."""
    from google.api_core import exceptions as gexc
    from google.cloud.bigtable_admin_v2 import types
    from google.cloud.bigtable_admin_v2.types import Type

    cfg = cfg or LiveConfig()
    families = {}
    for name, rule in gc_rules(cfg).items():
        parts = [types.GcRule(max_age={"seconds": int(rule["max_age_s"])})]
        if rule.get("max_versions"):
            parts.append(types.GcRule(max_num_versions=int(rule["max_versions"])))
        gc = parts[0] if len(parts) == 1 else types.GcRule(union=types.GcRule.Union(rules=parts))
        kwargs = {"gc_rule": gc}
        if rule["aggregate"]:
            kwargs["value_type"] = Type(
                aggregate_type=Type.Aggregate(input_type=Type(int64_type=Type.Int64()), sum=Type.Aggregate.Sum())
            )
        families[name] = types.ColumnFamily(**kwargs)
    admin = _admin_client(cfg)
    try:
        admin.create_table(
            parent=f"projects/{cfg.project}/instances/{cfg.instance}",
            table_id=cfg.table,
            table=types.Table(column_families=families),
        )
        return True
    except gexc.AlreadyExists:
        return False
    finally:
        admin.transport.close()


def drop_table(cfg: LiveConfig | None = None) -> None:
    from google.api_core import exceptions as gexc

    cfg = cfg or LiveConfig()
    admin = _admin_client(cfg)
    try:
        admin.delete_table(name=f"projects/{cfg.project}/instances/{cfg.instance}/tables/{cfg.table}")
    except gexc.NotFound:
        pass
    finally:
        admin.transport.close()


def open_table(cfg: LiveConfig | None = None):
    """The data-API table handle (``google.cloud.bigtable.data``) on a new client (it honours
    ``BIGTABLE_EMULATOR_HOST``); callers keep one per process (``runtime.per_instance``)."""
    import warnings

    from google.cloud.bigtable.data import BigtableDataClient

    cfg = cfg or LiveConfig()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Connecting to Bigtable emulator at ..."
        client = BigtableDataClient(project=cfg.project)
    return client.get_table(cfg.instance, cfg.table)
