"""Fuzzing the files a user hands the project (Hypothesis): any bytes in a sweep file or a table file
either give a valid result or one `GroupRobustError` line naming the file; never another exception, and
the sweep directory is never written by the checks."""

import io

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grouprobust.data.tabular import from_table
from grouprobust.errors import GroupRobustError
from grouprobust.sweep import prepare

from table_fixtures import census_frame

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

VALID_SWEEP = ("name: toy\nseed: 0\nseeds: [0, 1]\nregime: full\nset: {epochs: 1, model: linear}\n"
               "datasets:\n  spurious-gaussian: {n: 200, n_val: 100, n_test: 100}\n"
               "methods:\n  erm:\n    grid: {lr: [0.001, 0.01]}\n  groupdro:\n    random: {count: 2, params: [lr]}\n")

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=6), st.sampled_from(["erm", "groupdro", "spurious-gaussian", "full", "lr", "n"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.one_of(st.text(max_size=6), st.sampled_from(
                          ["set", "grid", "random", "count", "params", "lr", "n", "epochs"])), inner, max_size=3),
                      max_leaves=8)
TOP = st.dictionaries(st.sampled_from(["name", "seed", "seeds", "regime", "select", "set", "datasets", "methods",
                                       "track", "bogus"]), VALUES, max_size=6)


def mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    """``data`` with each ``(position, byte)`` written over it (positions taken modulo the length)."""
    buffer = bytearray(data)
    for position, byte in edits:
        buffer[position % len(buffer)] = byte
    return bytes(buffer)


def check_sweep(tmp_path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    out = tmp_path / "out"
    try:
        prepare(path, out)
    except GroupRobustError as err:
        assert len(str(err).splitlines()) == 1 and str(err)
    assert not out.exists()


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6))
def test_a_sweep_file_with_bytes_changed_is_read_or_refused_in_one_line(tmp_path, edits):
    check_sweep(tmp_path, "s.yaml", mutate(VALID_SWEEP.encode(), edits))


@FUZZ
@given(mapping=TOP, suffix=st.sampled_from([".yaml", ".toml"]))
def test_any_mapping_in_a_sweep_file_is_read_or_refused_in_one_line(tmp_path, mapping, suffix):
    if suffix == ".yaml":
        text = yaml.safe_dump(mapping, allow_unicode=True)
    else:  # TOML text of the same shape, as a user might write it (keys quoted, values as inline JSON-ish)
        lines = [f'"{k}" = {yaml.safe_dump(v, default_flow_style=True).strip()}' for k, v in mapping.items()]
        text = "\n".join(lines) + "\n"
    check_sweep(tmp_path, f"s{suffix}", text.encode())


@FUZZ
@given(text=st.text(max_size=200))
def test_any_text_as_a_sweep_file_is_read_or_refused_in_one_line(tmp_path, text):
    check_sweep(tmp_path, "s.yaml", text.encode("utf-8", "surrogatepass") if text else b"\n")


CSV = census_frame(120).to_csv(index=False).encode()


def check_table(tmp_path, data: bytes, suffix: str = ".csv") -> None:
    path = tmp_path / f"t{suffix}"
    path.write_bytes(data)
    try:
        splits = from_table(path, label="income", attribute="sex")
    except GroupRobustError as err:
        assert len(str(err).splitlines()) == 1 and str(err)
        return
    for split in splits:
        assert len(split) > 0 and np.isfinite(split.x).all()


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from([0, 10, 13, 34, 44, 0xff, 0xe9, 0x41, 0x30])),
                      min_size=1, max_size=8))
def test_a_table_with_bytes_changed_is_read_or_refused_in_one_line(tmp_path, edits):
    check_table(tmp_path, mutate(CSV, edits))


CELLS = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**20, 10**20),
                  st.text(max_size=5), st.booleans())


@FUZZ
@given(columns=st.dictionaries(st.sampled_from(["age", "x", "workclass", "split", "income", "sex", ""]),
                               st.lists(CELLS, min_size=1, max_size=30), min_size=1, max_size=6),
       suffix=st.sampled_from([".csv", ".tsv"]))
def test_any_table_is_read_or_refused_in_one_line(tmp_path, columns, suffix):
    n = max(len(v) for v in columns.values())
    frame = pd.DataFrame({k: (v * n)[:n] for k, v in columns.items()})
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, sep="\t" if suffix == ".tsv" else ",")
    check_table(tmp_path, buffer.getvalue().encode("utf-8", "surrogatepass"), suffix)


@pytest.mark.parametrize("data", [b"", b"\n\n", b"income,sex\n", b"\xff\xfe", b"\x00" * 64, b'"unclosed,quote\n1,2\n',
                                  b"income,sex,income\n1,a,1\n0,b,0\n"])
def test_degenerate_tables_are_refused_in_one_line(tmp_path, data):
    check_table(tmp_path, data)
