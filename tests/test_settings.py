"""Settings declared once: ``skelpipe train``'s options are made from ``TrainConfig``'s fields, one
type check, one ``KEY=VALUE`` reader and one checkpoint key serve every user."""

import dataclasses
import math

import click
import pytest
from click.testing import CliRunner

from skelpipe.commands.train import train_command
from skelpipe.core.errors import SkelpipeError
from skelpipe.core.fields import FiniteRange, IntList, of_kind, parse_assignment
from skelpipe.learn.config import TrainConfig
from skelpipe.pipeline.config import parse_override
from skelpipe.pose.settings import checkpoint_key


def _options() -> dict:
    return {p.name: p for p in train_command.params if isinstance(p, click.Option)}


@pytest.mark.parametrize("field", dataclasses.fields(TrainConfig), ids=lambda f: f.name)
def test_every_train_config_field_is_a_train_option_made_from_it(field):
    option, m = _options()[field.name], field.metadata
    assert option.opts == ["--" + field.name.replace("_", "-")]
    assert option.help == m["help"] and m["help"]
    if field.type is bool:
        assert option.is_flag and option.secondary_opts == ["--no-" + field.name.replace("_", "-")]
    elif m["choices"] is not None:
        assert isinstance(option.type, click.Choice) and tuple(option.type.choices) == tuple(m["choices"])
    elif field.type is int:
        assert isinstance(option.type, click.IntRange)
        assert (option.type.min, option.type.max) == (m["low"], m["high"])
    elif field.type is float:
        assert isinstance(option.type, FiniteRange) and option.type.max == m["high"]
        assert (option.type.min, option.type.min_open) == ((m["above"], True) if m["above"] is not None
                                                           else (m["low"], False))
    else:
        assert isinstance(option.type, IntList if field.type is tuple else click.types.StringParamType)


def test_train_options_are_the_config_fields_and_the_paths():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(_options()) == fields | {"pack_dir", "out_dir", "teacher_dir", "part_matrix"}
    assert _options()["stage"].required  # the one field the command asks for


def _parsed(tmp_path, *args) -> TrainConfig:
    ctx = train_command.make_context("train", ["--pack", str(tmp_path), "--out", str(tmp_path / "o"), *args])
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig.from_dict({k: v for k, v in ctx.params.items() if k in fields and v is not None})


def test_unset_train_options_give_the_config_defaults(tmp_path):
    assert _parsed(tmp_path, "--stage", "teacher") == TrainConfig(stage="teacher")
    cfg = _parsed(tmp_path, "--stage", "student", "--kd", "pmsc", "--milestones", "5, 9", "--no-amp",
                  "--lr", "0.05", "--compile", "--max-steps", "7", "--eval-batch-size", "32")
    assert cfg == TrainConfig(stage="student", kd="pmsc", milestones=(5, 9), amp=False, lr=0.05, compile=True,
                              max_steps=7, eval_batch_size=32)
    assert _parsed(tmp_path, "--stage", "teacher", "--milestones", "").milestones == ()


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "Invalid value for '--epochs': 0 is not in the range 1<=x<=100000"),
    (["--lr", "0"], "Invalid value for '--lr': 0.0 is not in the range 0.0<x<=1000.0"),
    (["--op", "nan"], "Invalid value for '--op': 'nan' is not a finite number"),
    (["--kd", "pmcs"], "Invalid value for '--kd': 'pmcs' is not one of 'none', 'kl', 'global-msc', 'skd', 'pe-gcn', 'pmsc'"),
    (["--channels", "8,x"], "expected comma-separated integers, got '8,x'"),
])
def test_a_train_option_out_of_its_field_range_is_a_usage_error(args, message, tmp_path):
    result = CliRunner().invoke(train_command, ["--stage", "teacher", "--pack", str(tmp_path), "--out",
                                                str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_a_choice_outside_its_field_is_one_line_naming_it():
    with pytest.raises(SkelpipeError, match=r"^training config: kd must be one of none, kl, global-msc, skd, pe-gcn, pmsc, "
                                            r"got 'pmcs' \(did you mean 'pmsc'\?\)$"):
        TrainConfig(stage="student", kd="pmcs")
    with pytest.raises(SkelpipeError, match="projection must be none or linear, got 'mlp'"):
        TrainConfig(projection="mlp")


@pytest.mark.parametrize("value,kind,ok", [
    (3, float, True), (3.5, int, False), (True, int, False), (True, float, False), (True, bool, True),
    ([8, 16], tuple, True), ([8, "16"], tuple, False), ([True], tuple, False), ("x", (int, str), True),
    (2, (int, str), True), (2.0, (int, str), False), ({}, dict, True), ([], dict, False),
])
def test_of_kind_is_the_one_type_check(value, kind, ok):
    assert of_kind(value, kind) is ok


@pytest.mark.parametrize("text,expected", [
    ("seed_threshold=0.3", ("seed_threshold", 0.3)),
    ("force_complete=True", ("force_complete", True)),
    ("force_complete=false", ("force_complete", False)),
    ("channels=[8, 16]", ("channels", [8, 16])),
    ("kd='pmsc'", ("kd", "pmsc")),
    ("kd=pmsc", ("kd", "pmsc")),  # a bare word is the text itself
    (" cif_neighbors = 16", ("cif_neighbors", 16)),
])
def test_key_value_settings_are_read_as_toml(text, expected):
    assert parse_assignment(text, "--x") == expected


def test_key_value_reads_nan_in_any_case_and_needs_an_equals_sign():
    assert math.isnan(parse_assignment("seed_threshold=NaN", "--x")[1])
    assert parse_override("teacher.channels=[8, 16]") == (["teacher", "channels"], [8, 16])
    with pytest.raises(click.BadParameter, match="expected section.key=value"):
        parse_override("teacher.epochs")
    with pytest.raises(click.BadParameter, match="expected KEY=VALUE"):
        parse_assignment("seed_threshold", "--decoder-setting")


def test_a_checkpoint_is_keyed_by_its_content(tmp_path):
    a, b = tmp_path / "a.pkl", tmp_path / "b.pkl"
    a.write_bytes(b"weights")
    b.write_bytes(b"weights")
    key = checkpoint_key("resnet50", str(a), tmp_path / "memo")
    assert key.startswith("sha256:") and key == checkpoint_key("resnet50", str(b))  # same bytes elsewhere
    b.write_bytes(b"other weights")
    assert checkpoint_key("resnet50", str(b)) != key
    assert checkpoint_key("shufflenetv2k16", None) == "" and checkpoint_key("resnet50", "named") == "named"
