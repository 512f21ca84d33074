"""Writes the small Parquet fixtures used by the import tests (run once; output committed).

    python3 -m venv /tmp/v && /tmp/v/bin/pip install pyarrow && /tmp/v/bin/python make_parquet.py
"""
import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq

utc = dt.timezone.utc
profiles = pa.table({
    "id": ["p1", "p2", "p3"],
    "age": pa.array([34, None, 51], pa.int64()),
    "score": [0.5, 1.25, None],
    "vip": [True, False, None],
    "joined": pa.array([dt.datetime(2024, 1, 31, 10, 0, tzinfo=utc), None,
                        dt.datetime(2023, 6, 1, tzinfo=utc)], pa.timestamp("ms", tz="UTC")),
    "interests": pa.array([["road", "coffee"], [], None], pa.list_(pa.string())),
    "city": ["Budapest", "Vienna", None],
})
pq.write_table(profiles, "profiles.parquet", compression="snappy")

events = pa.table({
    "user_id": ["p1", "p1", "p2", None],
    "ts": pa.array([dt.datetime(2024, 2, 1, 9, 0, tzinfo=utc), dt.datetime(2024, 2, 1, 9, 5, tzinfo=utc),
                    dt.datetime(2024, 3, 1, tzinfo=utc), dt.datetime(2024, 3, 2, tzinfo=utc)],
                   pa.timestamp("us", tz="UTC")),
    "event": ["page_viewed", "order_completed", "order_completed", "order_completed"],
    "revenue": [None, 120.5, 30.0, 5.0],
    "path": ["/winter/gloves", None, None, None],
})
pq.write_table(events, "events.parquet", compression="snappy")
