"""Fuzzing (hypothesis) of the readers of user input: override parser and config loader, CSV reader, split-file
reader, OT split inputs. Each input either loads or raises the package's one-line error, never anything else."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visprompt.config import load_config, parse_override
from visprompt.data.coop import read_split_file
from visprompt.data.custom import load_csv
from visprompt.errors import ConfigError, DataError
from visprompt.selection.ot import ot_split

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = st.sampled_from(["optim.lr", "optim.epochs", "data.shots", "noise.rate", "run.seed", "noise.type",
                        "prompt.n_ctx", "optim.precision", "nope.key", "optim", "", "run..name"])  # fmt: skip
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@FAST
@given(key=KEYS, value=st.one_of(TEXT, st.floats(allow_nan=True), st.integers(), st.just("[1, 2"), st.just("{a: ")))
def test_override_parser_and_config_load_only_raise_config_errors(key, value) -> None:
    item = f"{key}={value}"
    try:
        parse_override(item)
        load_config([], [item])
    except ConfigError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=30, deadline=None)
@given(text=st.text(max_size=60))
def test_a_bare_override_string_never_crashes(text) -> None:
    with contextlib.suppress(ConfigError):
        parse_override(text)


CELL = st.one_of(st.sampled_from(["a.png", "b.png", "missing.png", "", "train", "test", "val", "x", "y", "1",
                                  "path", "label", "split", "true_label", '"', ",", "\u00e9"]), TEXT)  # fmt: skip


@FAST
@given(rows=st.lists(st.lists(CELL, min_size=0, max_size=5), max_size=8), raw=st.binary(max_size=40))
def test_csv_reader_loads_or_raises_a_data_error(tmp_path_factory, rows, raw) -> None:
    from PIL import Image

    folder = tmp_path_factory.mktemp("csv")
    for name in ("a.png", "b.png"):
        Image.new("RGB", (2, 2)).save(folder / name)
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    for content in (buf.getvalue().encode(), raw):
        (folder / "d.csv").write_bytes(content)
        try:
            splits = load_csv(folder / "d.csv")
        except DataError as exc:
            assert "\n" not in str(exc)
        else:
            assert splits.train and all(0 <= s.label < len(splits.classnames) for s in splits.train)


ROW = st.one_of(
    st.tuples(st.sampled_from(["a.jpg", "b/c.jpg", ""]), st.integers(-2, 5), TEXT).map(list),
    st.lists(st.one_of(st.integers(), TEXT, st.none(), st.booleans(), st.floats()), max_size=4),
    st.none(), st.integers(), TEXT,
)  # fmt: skip


@FAST
@given(data=st.one_of(st.dictionaries(st.sampled_from(["train", "val", "test", "x"]), st.lists(ROW, max_size=4)),
                      st.lists(ROW, max_size=3), TEXT, st.none()),
       raw=st.binary(max_size=30))  # fmt: skip
def test_split_file_reader_loads_or_raises_a_data_error(tmp_path_factory, data, raw) -> None:
    folder = tmp_path_factory.mktemp("split")
    for content in (json.dumps(data).encode(), raw):
        (folder / "split.json").write_bytes(content)
        try:
            split = read_split_file(folder / "split.json")
        except DataError as exc:
            assert "\n" not in str(exc)
        else:
            assert all(isinstance(p, str) and y >= 0 for key in split for p, y, _ in split[key])


VALUES = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(0, 6), c=st.integers(1, 4), data=st.data())
def test_ot_split_accepts_probabilities_and_refuses_the_rest(n, c, data) -> None:
    raw = torch.tensor(data.draw(st.lists(VALUES, min_size=n * c, max_size=n * c)), dtype=torch.float32)
    labels = torch.tensor(data.draw(st.lists(st.integers(-1, c), min_size=n, max_size=n)), dtype=torch.long)
    as_probs = data.draw(st.booleans())
    probs = raw.reshape(n, c)
    if as_probs and n and torch.isfinite(probs).all():
        probs = probs.clamp(-50, 50).softmax(dim=1)
    try:
        result = ot_split(probs, labels)
    except ValueError as exc:  # the documented refusal, one line
        assert "\n" not in str(exc)
        return
    clean = result.clean
    assert clean.shape == (n,) and clean.dtype == torch.bool  # one class, one sample: still a valid split
    assert torch.isfinite(probs).all() and ((labels >= 0) & (labels < c)).all()
    assert torch.isfinite(result.confidence).all() and ((result.confidence >= 0) & (result.confidence <= 1)).all()
    assert ((result.pseudo_labels >= 0) & (result.pseudo_labels < c)).all()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_ot_split_refuses_nan_inf_and_negative_probabilities(value) -> None:
    probs = torch.full((4, 2), 0.5)
    probs[1, 0] = value
    with pytest.raises(ValueError, match=r"NaN or infinite|probabilities"):
        ot_split(probs, torch.tensor([0, 1, 0, 1]))
