from pathlib import Path

import pandas as pd
import pytest

from pika_utils.core import store


def test_stable_hash_ignores_key_order_and_types():
    a = store.stable_hash({"b": (1, 2), "a": Path("x")})
    b = store.stable_hash({"a": "x", "b": [1, 2]})
    assert a == b
    assert store.stable_hash({"a": 1}) != store.stable_hash({"a": 2})


def test_parquet_roundtrip_and_corrupt_file_is_named(tmp_path):
    df = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    p = store.write_parquet(tmp_path / "t.parquet", df, metadata={"n": 2})
    assert store.read_parquet(p).equals(df)
    assert store.read_json(tmp_path / "t.json") == {"n": 2}
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])  # a partial file
    with pytest.raises(ValueError, match=r"t\.parquet is corrupt or partial.*move the file aside"):
        store.read_parquet(p)
    assert p.read_bytes() == raw[: len(raw) // 2]  # untouched


def test_write_if_absent_never_overwrites(tmp_path):
    df = pd.DataFrame({"x": [1, 2]})
    p = store.write_if_absent(tmp_path / "in.parquet", df)
    store.write_if_absent(p, df)  # identical: fine
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        store.write_if_absent(p, pd.DataFrame({"x": [3]}))
    assert store.read_parquet(p).equals(df)


def test_versions_recorded():
    v = store.versions()
    assert v["torch"] and v["pandas"] and v["python"]
