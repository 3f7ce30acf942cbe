"""The CLI entry point: help, config show, and one-line errors with a non-zero exit."""

from __future__ import annotations

import pytest
import torch
import yaml

from visprompt.cli import error_line, main
from visprompt.errors import DataError


def test_help_lists_subcommands(capsys) -> None:
    assert main([]) == 0
    assert "config" in capsys.readouterr().out


def test_config_show_layers_presets_flags_and_overrides(capsys) -> None:
    code = main(["config", "show", "--method", "nlprompt", "--backbone", "vit-b-16", "--rate", "0.5",
                 "--noise", "asym", "--set", "optim.lr=0.01", "--weights", "none"])  # fmt: skip
    assert code == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["method"]["name"] == "nlprompt" and shown["method"]["selection"]["scope"] == "full"
    assert shown["backbone"] == {"arch": "ViT-B-16-quickgelu", "weights": None, "sha256": None, "cache_dir": None}
    assert shown["noise"]["rate"] == 0.5 and shown["noise"]["type"] == "asym" and shown["optim"]["lr"] == 0.01


def test_unknown_backbone_name_is_taken_as_an_open_clip_arch(capsys) -> None:
    assert main(["config", "show", "--backbone", "ViT-L-14"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["backbone"]["arch"] == "ViT-L-14"


def test_errors_are_one_line_and_exit_2(capsys) -> None:
    assert main(["config", "show", "--set", "optim.momentun=0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key optim.momentun; did you mean optim.momentum?")
    assert err.count("\n") == 1
    assert main(["config", "show", "--method", "coopp"]) == 2
    assert "unknown method 'coopp'" in capsys.readouterr().err


def test_a_config_file_with_a_non_utf8_byte_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    path = tmp_path / "mine.yaml"
    path.write_bytes(b"optim:\n  lr: 0.002  # caf\xe9\n")  # Latin-1 e-acute
    for command in (["config", "show"], ["train", "--out", str(tmp_path / "runs")]):
        assert main([*command, "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert err == f"error: config file {path}: not UTF-8 text\n"
    assert not (tmp_path / "runs").exists()  # refused before anything is written


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        raise DataError(f"image DATA/img{i}.png: cannot decode (truncated file)")


def test_an_error_raised_in_a_dataloader_worker_is_still_one_line() -> None:
    loader = torch.utils.data.DataLoader(_Unreadable(), num_workers=1)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert "Original Traceback" in str(info.value)  # torch's multi-line wrapper
    assert error_line(info.value) == "image DATA/img0.png: cannot decode (truncated file)"
    assert error_line(DataError("plain message")) == "plain message"


def test_methods_lists_the_registry_and_prints_a_recipe(capsys) -> None:
    from visprompt.registry import METHODS

    assert main(["methods"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == METHODS.names()
    assert main(["methods", "nlprompt"]) == 0
    out = capsys.readouterr().out
    assert "method.selection.scope: 'full'" in out and "method.loss.noisy: 'mae'" in out
    assert main(["methods", "nlprompts"]) == 2
    assert "did you mean 'nlprompt'" in capsys.readouterr().err


def test_a_closed_output_pipe_is_not_a_traceback() -> None:
    import subprocess
    import sys

    code = "import sys; from visprompt.cli import main; sys.exit(main(['methods', 'visprompt']))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # hang up before it writes (it imports torch first), as `| head -0` would
    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in proc.stderr.read()
