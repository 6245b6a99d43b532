"""KEY=VALUE options as people type them (`--arch-kwargs`, the Your model page), and
the small helpers every command shares. Pure functions: no model, no data."""

import argparse

import pytest
import torch

from mnistlens.commands._common import KeyValues, top3_line
from mnistlens.options import parse_options, parse_value


@pytest.mark.parametrize(
    "text, value",
    [
        ("true", True),
        ("False", False),
        ("32", 32),
        ("-3", -3),
        ("+3", 3),
        ("0.1", 0.1),
        ("-0.5", -0.5),
        ("1e-3", 0.001),
        ("32,64", [32, 64]),
        ("32,", [32]),
    ],
)
def test_values_read_as_typed(text, value):
    got = parse_value(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text", ["", "abc", "3,x", ",", "1.5,2"])
def test_unreadable_values_say_what_is_expected(text):
    with pytest.raises(ValueError, match="expected true/false, an int, a float or ints"):
        parse_value(text)


def test_pairs_split_on_spaces_and_semicolons_and_skip_empty_ones():
    assert parse_options("hidden=512,256 dropout=0.1;;bias=false ;") == {
        "hidden": [512, 256],
        "dropout": 0.1,
        "bias": False,
    }
    assert parse_options("   ") == {}


@pytest.mark.parametrize(
    "text, message",
    [
        ("hidden", "expected KEY=VALUE, got 'hidden'"),
        ("=3", "expected KEY=VALUE, got '=3'"),
        ("a=1 a=2", "a given twice"),
        ("a=b=c", "a: bad value 'b=c'"),  # the first = splits the key from the value
    ],
)
def test_bad_pairs_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        parse_options(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="x", exit_on_error=False)
    p.add_argument("--kw", nargs="+", action=KeyValues, default={})
    return p


def test_a_repeated_option_adds_to_the_pairs(capsys):
    args = parser().parse_args(["--kw", "hidden=32,", "--kw", "dropout=0.1"])
    assert args.kw == {"hidden": [32], "dropout": 0.1}
    with pytest.raises(SystemExit):
        parser().parse_args(["--kw", "a=1", "--kw", "a=2"])
    assert "argument --kw: a given twice" in capsys.readouterr().err


def test_top3_names_the_three_most_likely_classes():
    probabilities = torch.tensor([0.01, 0.6, 0.0, 0.3, 0.05, 0.04, 0, 0, 0, 0])
    assert top3_line(probabilities) == "top 3: 1 (60.00%), 3 (30.00%), 4 (5.00%)"
