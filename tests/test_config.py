"""Config resolution: layering, dotted overrides, type checks and one-line errors naming the key."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re

import pytest
import yaml

from visprompt.commands.config import add_config_arguments, resolve_config
from visprompt.config import (
    RunConfig,
    flatten_tree,
    load_config,
    load_run_config,
    parse_override,
    to_dict,
    to_yaml,
    untrained_values,
)
from visprompt.errors import ConfigError
from visprompt.registry import METHODS


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


@pytest.mark.parametrize(
    ("override", "yaml_reads"),
    [
        ("run.seed=010", 8),  # octal
        ("data.shots=016", 14),
        ("run.seed=1:30", 90),  # sexagesimal
        ("optim.epochs=0x1e", 30),
        ("optim.lr=010", 8),
        ("run.class_chunk=08", None),  # not octal: YAML keeps it as text
        ("run.seed=1_000", 1000),
    ],
)
def test_an_override_number_not_written_in_plain_decimal_is_refused(override: str, yaml_reads: int | None) -> None:
    # YAML 1.1 would read these as other numbers, and the run name would say seed8 or 14shot
    key, _, text = override.partition("=")
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    message = str(info.value)
    assert message.startswith(f"{key}: expected a plain decimal ") and f"got {text} " in message and "\n" not in message
    assert yaml_reads is None or f"reads it as {yaml_reads})" in message
    assert load_config(overrides=["run.seed=10", "data.shots=16", "optim.lr=2e-3"]).run.seed == 10


def test_a_text_field_keeps_the_override_text_as_written() -> None:
    cfg = load_config(overrides=["run.name=010", "prompt.ctx_init=1:30", "data.root=0x1e"])
    assert (cfg.run.name, cfg.prompt.ctx_init, cfg.data.root) == ("010", "1:30", "0x1e")
    assert load_config(overrides=['run.name="007"', "backbone.weights=null"]).run.name == "007"
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)  # the shorthand flags go through the same path
    cfg = resolve_config(parser.parse_args(["--name", "010", "--root", "07", "--weights", "none"]))
    assert (cfg.run.name, cfg.data.root, cfg.backbone.weights) == ("010", "07", None)


def test_a_config_file_number_not_written_in_plain_decimal_is_refused(tmp_path) -> None:
    file = tmp_path / "mine.yaml"
    bodies = {"run:\n  seed: 010\n": "010", "run:\n  name: 010\n": "010", "optim:\n  epochs: 0x1e\n": "0x1e",
              "optim:\n  lr: 0.002\n  warmup_lr: 1:30.5\n": "1:30.5"}  # fmt: skip
    for body, text in bodies.items():
        file.write_text(body)
        with pytest.raises(ConfigError, match=rf"^config file .*mine\.yaml line \d: {re.escape(text)} is not a plain "):
            load_config([file])
    file.write_text("run:\n  name: '010'\n  seed: 10\noptim:\n  epochs: 1_000\n")  # quoted: text; 1_000 is 1000
    cfg = load_config([file])
    assert (cfg.run.name, cfg.run.seed, cfg.optim.epochs) == ("010", 10, 1000)


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


@pytest.mark.parametrize(
    ("dataset", "name"),
    [("dtd", "dtd"), ("DescribableTextures", "dtd"), ("food101n", "food101n"), ("testbed-many", "testbed-many")],
)
def test_a_data_path_the_dataset_does_not_read_is_refused(dataset: str, name: str) -> None:
    # a registered dataset is read from data.root: the run would train on <root>/dtd while config.yaml named the path
    with pytest.raises(ConfigError, match=rf"^data\.path: not read by dataset '{name}', which is read from data\.root "
                       r"\(FAKE\); leave it unset") as info:  # fmt: skip
        load_config(overrides=["data.root=FAKE", "data.path=/some/images"], dataset=dataset)
    assert "\n" not in str(info.value)
    assert load_config(overrides=["data.root=FAKE"], dataset=dataset).data.path is None
    for reads in ("folder", "csv"):  # the datasets whose loader reads it
        assert load_config(overrides=["data.path=/some/images"], dataset=reads).data.path == "/some/images"


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


# ------------------------------------------------------------------------------------------ method recipes

METHOD_NAMES = METHODS.names()


def _recipe_view(cfg: RunConfig) -> dict:
    flat = flatten_tree(to_dict(cfg))
    return {key: flat[key] for key in METHODS.get(cfg.method.name).recipe}


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_layer_that_names_a_method_gets_exactly_its_recipe(name: str, tmp_path) -> None:
    recipe = METHODS.get(name).recipe
    by_flag = load_config(method=name)
    by_set = load_config(overrides=[f"method.name={name}"])
    by_mapping = load_config(overrides={"method.name": name})
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text(f"method: {{name: {name}}}\noptim: {{lr: 0.01}}\n")
    by_yaml = load_config([yaml_file])
    assert by_flag == by_set == by_mapping == dataclasses.replace(by_yaml, optim=by_flag.optim)
    assert _recipe_view(by_flag) == dict(recipe)
    # the field defaults are plain CE with no selection: nothing of another method's recipe leaks in
    if "method.selection.kind" not in recipe:
        assert by_flag.method.selection.kind == "none"


def test_later_layers_change_single_fields_of_the_recipe() -> None:
    cfg = load_config(overrides=["method.selection.eps=0.05"], method="nlprompt")
    assert cfg.method.selection.eps == 0.05
    assert (cfg.method.selection.kind, cfg.method.selection.scope, cfg.method.loss.noisy) == ("ot", "full", "mae")
    # the method named by the last layer decides the recipe, whatever the shorthand said
    coop = load_config(overrides=["method.name=coop"], method="visprompt")
    assert (coop.method.name, coop.method.selection.kind, coop.method.loss.noisy) == ("coop", "none", "none")


def test_a_variant_is_its_base_recipe_plus_its_changes() -> None:
    base, variant = load_config(method="visprompt"), load_config(method="visprompt-clean-only")
    assert METHODS.get("visprompt-clean-only").variant_of == "visprompt"
    assert variant.method.loss.noisy == "none"
    assert dataclasses.replace(variant, method=base.method) == base
    assert dataclasses.replace(variant.method, name="visprompt", loss=base.method.loss) == base.method


def test_unknown_method_and_backbone_preset() -> None:
    with pytest.raises(ConfigError, match=r"^method.name: unknown method 'cop'; did you mean 'coop'"):
        load_config(method="cop")
    cfg = load_config(backbone="rn50")
    assert (cfg.backbone.arch, cfg.backbone.weights) == ("RN50-quickgelu", "openai")
    assert load_config(backbone="ViT-L-14").backbone.arch == "ViT-L-14"  # not a preset: an open_clip name
    assert load_config(backbone="testbed").backbone.weights is None


def test_yaml_1_1_exponents_are_numbers_in_every_layer(tmp_path) -> None:
    file = tmp_path / "lr.yaml"
    file.write_text("optim: {lr: 1e-3}\n")  # YAML 1.1 reads this as a string
    assert load_config([file]).optim.lr == 1e-3


def test_a_method_option_the_named_method_does_not_read_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^method.prior_weight: not read by method visprompt"):
        load_config(overrides=["method.prior_weight=1"], method="visprompt")
    with pytest.raises(ConfigError, match=r"^method.mixup_alpha: not read by method coop"):
        load_config(overrides=["method.mixup_alpha=0.5"], method="coop")
    assert load_config(overrides=["method.mixup_alpha=0.5"], method="joapr").method.mixup_alpha == 0.5
    assert load_config(overrides=["method.prior_weight=0.25"], method="visprompt-plus").method.prior_weight == 0.25


@pytest.mark.parametrize(
    ("method", "override", "refused"),
    [
        ("coop", "prompt.gate=zero", "prompt.gate: not read by method coop"),
        ("zeroshot", "prompt.n_ctx=4", "prompt.n_ctx: not read by method zeroshot"),
        ("joapr", "method.loss.alpha=0.9", "method.loss.alpha: not read by method joapr"),
        ("joapr", "method.selection.kind=ot", "method.selection.kind: not read by method joapr"),
        ("cocoop", "prompt.csc=true", "prompt.csc: not read by method cocoop"),
        ("coop", "method.selection.eps=0.1", "method.selection.eps: not read by selection kind 'none'"),
        ("visprompt", "method.selection.gmm_threshold=0.7", "method.selection.gmm_threshold: not read by selection"),
        ("visprompt-plus", "method.selection.kind=none", "method.selection.scope: not read by selection kind"),
        ("coop", "method.loss.q=0.7", "method.loss.q: the GCE exponent is not read"),
    ],
)
def test_a_field_the_method_does_not_read_is_refused(method: str, override: str, refused: str) -> None:
    # config.yaml must never record a prompt, selection or loss setting that the run did not use
    with pytest.raises(ConfigError, match="^" + re.escape(refused)):
        load_config(overrides=[override], method=method)


@pytest.mark.parametrize(
    ("method", "overrides", "refused"),
    [
        ("nlprompt", ["method.loss.alpha=0.9"], "method.loss.alpha: not read with method.loss.schedule=sequential"),
        ("visprompt-faithful", ["method.loss.normalize_alpha=true"], "method.loss.normalize_alpha: not read with "
         "method.loss.schedule=sequential"),
        ("visprompt", ["method.loss.schedule=sequential", "method.loss.alpha=0.8"], "method.loss.alpha: not read with"),
        ("coop", ["method.loss.noisy=mae"], "method.loss.noisy: not read with method.selection.kind=none"),
        ("visprompt", ["method.selection.kind=none", "method.loss.q=0.7"], "method.loss.q: not read with "
         "method.selection.kind=none"),
        ("visprompt-plus", ["method.loss.q=0.7"], "method.loss.q: not read with method.q_schedule=noise"),
        ("visprompt-plus", ["method.relabel=false", "method.noisy_target=zeroshot", "method.loss.noisy=mae",
                            "method.q_schedule=fixed"], "method.loss.noisy: not read with method.noisy_target"),
        # the phrase's token count is the context length: CoCoOp's "a photo of a" trains 4 tokens, whatever n_ctx says
        ("cocoop", ["prompt.n_ctx=16"], "prompt.n_ctx: not read with prompt.ctx_init='a photo of a'"),
        ("coop", ["prompt.ctx_init=a photo of a", "prompt.n_ctx=4"], "prompt.n_ctx: not read with prompt.ctx_init"),
        ("visprompt", ["prompt.ctx_init=a photo of a", "prompt.n_ctx=8"], "prompt.n_ctx: not read with"),
    ],
)  # fmt: skip
def test_a_field_the_settings_leave_unread_is_refused(method: str, overrides: list[str], refused: str) -> None:
    # the run would train exactly as the method does, while config.yaml and the report's label say otherwise
    with pytest.raises(ConfigError, match="^" + re.escape(refused)) as info:
        load_config(overrides=overrides, method=method)
    assert "leave it at" in str(info.value) and "\n" not in str(info.value)


def test_a_field_the_settings_leave_unread_keeps_the_recipes_value() -> None:
    assert load_config(overrides=["method.loss.alpha=0.5"], method="nlprompt").method.loss.alpha == 0.5
    # with a switch that reads it again, the field is the user's to set
    assert load_config(overrides=["method.loss.schedule=joint", "method.loss.alpha=0.9"], method="nlprompt")
    assert load_config(overrides=["method.selection.kind=ot", "method.loss.noisy=gce"], method="coop")
    assert load_config(overrides=["method.q_schedule=fixed", "method.loss.q=0.7"], method="visprompt-plus")
    assert load_config(overrides=["method.selection.kind=none"], method="visprompt").method.loss.noisy == "gce"
    # ... or the value that says it trains nothing
    cfg = load_config(overrides=["method.selection.kind=none", "method.loss.noisy=none"], method="visprompt")
    assert cfg.method.loss.noisy == "none"
    assert load_config(overrides=["method.loss.q=0.7"], method="coop-gce").method.loss.q == 0.7  # its clean loss
    # without an initialising phrase the context length is read
    assert load_config(overrides=["prompt.ctx_init=", "prompt.n_ctx=16"], method="cocoop").prompt.n_ctx == 16
    assert load_config(overrides=["prompt.ctx_init=a photo of a"], method="coop").prompt.n_ctx == 16  # the default


def test_a_method_that_does_not_train_holds_the_training_fields(tmp_path, caplog) -> None:
    # zero-shot CLIP trains nothing: config.yaml, run reuse and the report's label must not tell its runs apart by a
    # schedule (was: `--epochs 7` recorded while metrics.json said 0 epochs; two runs differing only in it were
    # zeroshot[optim.epochs=1] and zeroshot[optim.epochs=2] with identical numbers)
    training = ["optim.epochs=7", "optim.lr=0.5", "optim.momentum=0.5", "optim.weight_decay=0", "optim.batch_size=4",
                "optim.warmup_epochs=0", "optim.warmup_lr=0.1", "data.augment=false",
                "run.cache_features=false"]  # fmt: skip
    evaluation = ["optim.eval_batch_size=8", "optim.precision=fp32", "data.num_workers=2"]  # what evaluation reads
    with caplog.at_level(logging.INFO, logger="visprompt.config"):
        cfg = load_config(overrides=[*training, *evaluation], method="zeroshot")
    assert "method zeroshot does not train: its config keeps optim.lr=0.002, optim.momentum=0.9" in caplog.text
    assert cfg == load_config(overrides=evaluation, method="zeroshot") != load_config(method="zeroshot")
    assert (cfg.optim.eval_batch_size, cfg.optim.precision, cfg.data.num_workers) == (8, "fp32", 2)
    held = untrained_values("zeroshot")
    assert set(held) == {key.partition("=")[0] for key in training}
    defaults = flatten_tree(to_dict(RunConfig()))  # zero-shot's recipe sets none of them
    assert {key: flatten_tree(to_dict(cfg))[key] for key in held} == held == {key: defaults[key] for key in held}
    assert untrained_values("coop") == {}
    coop = load_config(overrides=training, method="coop")  # a method that trains reads every one
    assert (coop.optim.epochs, coop.optim.lr, coop.data.augment, coop.run.cache_features) == (7, 0.5, False, False)
    # a config.yaml written before they were held reads back as the run it is (reused, not "other settings")
    saved = to_dict(load_config(method="zeroshot"))
    saved["optim"]["epochs"], saved["data"]["augment"] = 30, False
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert load_run_config(tmp_path / "config.yaml") == load_config(method="zeroshot")


@pytest.mark.parametrize("phrase", ["_", "__", "_ _"])
def test_a_context_phrase_without_words_is_refused(phrase: str) -> None:
    # such a phrase tokenises to nothing: the prompt would train zero context tokens while config.yaml names a phrase
    with pytest.raises(ConfigError, match=r"^prompt\.ctx_init: expected a phrase with words"):
        load_config(overrides=[f"prompt.ctx_init={phrase}"], method="coop")


@pytest.mark.parametrize(
    ("method", "override"),
    [
        ("coop", "method.selection.kind=ot"),  # CoOp with VisPrompt's split: an ablation the builder honours
        ("coop-gce", "method.loss.q=0.7"),
        ("visprompt", "prompt.gate=zero"),
        ("visprompt-plus", "prompt.use_ffn=false"),
        ("joapr", "method.selection.gmm_threshold=0.6"),
        ("cocoop", "prompt.class_token_position=front"),
    ],
)
def test_a_field_the_method_reads_is_accepted(method: str, override: str) -> None:
    key, value = override.split("=")
    section, _, name = key.rpartition(".")
    cfg = load_config(overrides=[override], method=method)
    obj = cfg
    for part in section.split("."):
        obj = getattr(obj, part)
    assert str(getattr(obj, name)).lower() == value
