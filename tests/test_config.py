"""Config resolution: layering, dotted overrides, type checks and one-line errors naming the key."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from visprompt.config import RunConfig, config_dir, load_config, parse_override, to_yaml
from visprompt.errors import ConfigError


def test_defaults_are_the_paper_protocol() -> None:
    cfg = load_config()
    assert cfg.optim.lr == 0.002 and cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 5e-4
    assert cfg.optim.batch_size == 16 and cfg.optim.warmup_lr == 1e-5
    assert cfg.prompt.n_ctx == 16 and cfg.method.loss.alpha == 0.5 and cfg.method.loss.q == 0.5
    assert cfg.method.selection.eps == 0.01


def test_layers_later_wins(tmp_path) -> None:
    first = tmp_path / "a.yaml"
    first.write_text("optim: {lr: 0.1, epochs: 3}\nmethod: {selection: {eps: 0.5}}\n")
    second = tmp_path / "b.yaml"
    second.write_text("optim: {lr: 0.2}\n")
    cfg = load_config([first, second], ["optim.epochs=7", "method.selection.scope=full"])
    assert cfg.optim.lr == 0.2  # second file wins over the first
    assert cfg.optim.epochs == 7  # override wins over the file
    assert cfg.method.selection.eps == 0.5  # nested values merge instead of replacing the section
    assert cfg.method.selection.scope == "full"


def test_override_parsing() -> None:
    assert parse_override("optim.lr=1e-3") == ("optim.lr", 1e-3)
    assert parse_override("backbone.weights=null") == ("backbone.weights", None)
    assert parse_override("prompt.ctx_init=a photo of a") == ("prompt.ctx_init", "a photo of a")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("optim.lr")


def test_yaml_off_is_the_word_where_a_choice_expects_it(tmp_path) -> None:
    assert load_config(overrides=["prompt.gate=off"]).prompt.gate == "off"
    preset = tmp_path / "gate.yaml"
    preset.write_text("prompt: {gate: off}\n")
    assert load_config([preset]).prompt.gate == "off"
    with pytest.raises(ConfigError, match=r"prompt\.use_ffn: expected true or false"):
        load_config(overrides=["prompt.use_ffn=maybe"])


def test_ints_become_floats_but_not_the_reverse() -> None:
    assert load_config(overrides=["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ConfigError, match=r"optim\.epochs: expected an integer, got 1.5"):
        load_config(overrides=["optim.epochs=1.5"])
    with pytest.raises(ConfigError, match=r"prompt\.use_ffn: expected true or false"):
        load_config(overrides=["prompt.use_ffn=2"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", r"unknown config key optim\.lrr; did you mean optim\.lr\?"),
        ("optimm.lr=1", r"unknown config key optimm; did you mean optim\b"),
        ("noise.rate=1.0", r"noise\.rate: expected a value in \[0, 1\), got 1\.0"),
        ("noise.rate=-0.1", r"noise\.rate: expected a value in \[0, 1\)"),
        ("prompt.gate=of", r"prompt\.gate: expected one of .*did you mean 'off'\?"),
        ("method.selection.eps=0", r"method\.selection\.eps: expected a value > 0"),
        ("data.shots=0", r"data\.shots: expected an integer >= 1"),
        ("data.dataset=csv", r"data\.path: required when data\.dataset is 'csv'"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(overrides=[override])
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([tmp_path / "missing.yaml"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim: {lr: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml line \d+: invalid YAML"):
        load_config([broken])
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config([scalar])


def test_yaml_round_trip() -> None:
    cfg = load_config(overrides=["optim.lr=0.01", "prompt.ctx_init=a photo of a", "backbone.weights=null"])
    again = load_config(base=yaml.safe_load(to_yaml(cfg)))
    assert again == cfg


def test_configs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().optim.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("path", sorted(config_dir().glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_preset_resolves(path) -> None:
    load_config([path])


def test_method_presets_name_their_method() -> None:
    for path in (config_dir() / "methods").glob("*.yaml"):
        assert load_config([path]).method.name == path.stem
