"""The ``agcl`` command itself: sub-commands, help that reads like a man page, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agcl.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert main([]) == 2  # no command: the help, and a usage error


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_a_help_with_examples_and_exit_status(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"agcl {command}" in out and "examples:" in out and "exit status" in out


def test_train_with_the_2d_domain_is_train_2d(capsys):
    assert main(["train", "--domain", "image2d", "--help"]) == 0
    assert "VOCdevkit" in capsys.readouterr().out
    assert main(["train", "--domain=image2d", "--help"]) == 0
    assert "VOCdevkit" in capsys.readouterr().out


def test_unknown_command_and_bad_flags_exit_2(capsys):
    assert main(["segment"]) == 2
    assert "unknown command 'segment'" in capsys.readouterr().err
    assert main(["train", "--no-such-flag"]) == 2
    assert main(["predict", "--run", "x"]) == 2  # --input and --out are required
    assert "required" in capsys.readouterr().err


def test_python_dash_m_agcl_runs_the_command():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "agcl", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0 and "predict" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "agcl", "evaluate", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0 and "--labels" in proc.stdout


def test_set_wins_over_a_flag_and_fields_of_a_flag_are_refused_by_name():
    from agcl.cli import train, train2d
    from agcl.cli._common import UserError

    # a --set item is applied after the flags: the training seed of one run, other epochs
    args = train.parse_args(["--epochs", "3", "--set", "seed=5", "--set", "segment.epochs=6"])
    cfg = train.config_for(args, "agcl")
    assert (cfg.seed, cfg.pretrain.epochs, cfg.segment.epochs) == (5, 3, 6)
    # an ablation gives each run its seed and method: a --set of them would overwrite them all
    args = train.parse_args(["--ablation", "--seeds", "2", "--set", "seed=5"])
    with pytest.raises(UserError, match=r"--set seed=\.\.\..*set by --seed and --seeds"):
        train.config_for(args, "agcl", 1)
    for command in (train, train2d):
        args = command.parse_args(["--set", "pretrain.method=sscl"])
        with pytest.raises(UserError, match=r"pretrain\.method.*set by --pretrain"):
            command.config_for(args, "agcl")
        # a whole section's value counts as each field it names
        args = command.parse_args(["--set", 'pretrain={"method": "sscl", "epochs": 2}'])
        with pytest.raises(UserError, match=r"pretrain\.method.*set by --pretrain"):
            command.config_for(args, "agcl")
        args = command.parse_args(["--set", "coarse.source=gt"])
        with pytest.raises(UserError, match=r"coarse\.source.*set by --attention"):
            command.config_for(args, "agcl")
