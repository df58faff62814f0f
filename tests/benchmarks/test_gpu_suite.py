"""benchmarks/gpu_suite.py: time-boxed steps, failures reported with their traceback while the
suite goes on, the time budget skipping steps, and the reports; plus the helpers of the GPU
scripts it runs (gpu_loss, gpu_tune) that the CPU can check."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
SUITE = BENCH / "gpu_suite.py"


@pytest.fixture
def bench(monkeypatch):
    """The benchmarks folder first on sys.path, as when a script there runs."""
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_suite

    return gpu_suite


def _suite(tmp_path: Path, *args: str, timeout: float = 120):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(SUITE), "--out", str(out), "--dry-run", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,
    )
    wall = time.monotonic() - t0
    report = json.loads((out / "gpu_suite.json").read_text())
    return proc, report, (out / "gpu_suite.md").read_text(), wall


def test_a_raising_step_is_reported_and_a_hanging_one_ended_and_the_budget_skips(tmp_path):
    # env raises, gpu_check hangs past its 2 s box, and then the 44 s budget leaves the
    # pipeline less than its 40 s minimum: each is recorded and the suite still writes it all.
    proc, report, md, wall = _suite(
        tmp_path,
        "--steps",
        "env,gpu_check,pipeline",
        "--inject-failure",
        "env=raise",
        "--inject-failure",
        "gpu_check=hang",
        "--step-timeout",
        "2",
        "--time-budget",
        "44",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["env", "gpu_check", "pipeline"]

    env = steps["env"]
    assert env["status"] == "failed" and env["returncode"] == 1 and env["seconds"] > 0
    assert "Traceback (most recent call last)" in env["stderr_tail"]
    assert "RuntimeError: injected failure in step env" in env["stderr_tail"]

    hang = steps["gpu_check"]
    assert hang["status"] == "timeout" and hang["returncode"] is None
    assert hang["timeout_s"] == 2 and 2 <= hang["seconds"] < 15
    assert "time box" in hang["reason"]
    pid = int(hang["stdout_tail"].split("(pid ")[1].split(",")[0])
    with pytest.raises(ProcessLookupError):  # its process (group) was ended, not left running
        os.kill(pid, 0)

    skipped = steps["pipeline"]
    assert skipped["status"] == "skipped" and skipped["seconds"] == 0
    assert "time budget" in skipped["reason"] and "at least 40 s" in skipped["reason"]
    assert wall < 30  # it did not wait for the hanging step

    assert all(t["verdict"] == "not measured" for t in report["targets"])
    assert report["suite"]["dry_run"] is True and report["suite"]["time_budget_s"] == 44
    assert "Dry run on the CPU at toy sizes" in md
    for row in ("| env | failed |", "| gpu_check | timeout |", "| pipeline | skipped |"):
        assert row in md
    failures = md.split("## Failures", 1)[1]
    assert "RuntimeError: injected failure in step env" in failures and "### gpu_check" in failures
    assert (tmp_path / "out" / "steps" / "env.err").is_file()


def test_the_env_step_records_the_machine(tmp_path):
    import torch

    proc, report, md, _ = _suite(tmp_path, "--steps", "env")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (env,) = report["steps"]
    assert env["status"] == "ok" and env["seconds"] > 0 and env["timeout_s"] > 0
    machine = report["machine"]
    assert machine["torch"] == torch.__version__ and machine["cuda_available"] is False
    assert machine["python"] == ".".join(map(str, sys.version_info[:3]))
    packages = env["summary"]["packages"]
    assert packages["pytest"]["version"] == pytest.__version__
    assert packages["pytest"]["source"] == "present"
    assert "| env | ok |" in md and "| pytest |" in md


def test_an_earlier_run_is_not_overwritten_without_the_flag(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "gpu_suite.json").write_text("{}")
    proc = subprocess.run(
        [sys.executable, str(SUITE), "--out", str(out), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "already holds a suite run" in proc.stderr
    assert (out / "gpu_suite.json").read_text() == "{}"


def test_overwrite_removes_only_the_suites_own_folders(bench, tmp_path):
    out = tmp_path / "out"
    (out / "steps").mkdir(parents=True)
    (out / "steps" / "old.json").write_text("{}")
    (out / "mine.txt").write_text("a user's file")
    (out / "gpu_suite.json").write_text("{}")
    bench.prepare_out(out, overwrite=True)  # no marker: not the suite's folder, nothing removed
    assert (out / "steps" / "old.json").exists()
    bench.prepare_out(out, overwrite=True)  # the marker is there now: its steps/ goes
    assert not (out / "steps" / "old.json").exists() and (out / "steps").is_dir()
    assert (out / "mine.txt").read_text() == "a user's file"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "x", "--steps", "env,bogus"], "comma-separated subset of env,pytest_cuda"),
        (["--out", "x", "--inject-failure", "env=explode"], "STEP=raise or STEP=hang"),
        (["--out", "x", "--time-budget", "0"], "seconds > 0"),
        ([], "--out is required"),
    ],
)
def test_bad_arguments_name_what_is_valid(args, message, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SUITE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_list_prints_the_steps_in_order(bench, capsys):
    assert bench.main(["--list", "--tune"]) == 0
    text = capsys.readouterr().out
    positions = [text.index(f"  {name} ") for name in bench.STEP_NAMES]
    assert positions == sorted(positions)


def test_selected_keeps_the_suites_order_and_tune_is_opt_in(bench):
    def names(*argv):
        return [s.name for s in bench.selected(bench._parse(["--out", "x", *argv]))]

    assert names() == ["env", "pytest_cuda", "gpu_check", "loss", "demo", "pipeline"]
    assert names("--steps", "loss,env") == ["env", "loss"]
    assert names("--tune", "--steps", "env") == ["env", "tune"]


def test_time_boxes_share_what_is_left(bench):
    step = bench.Step
    a, b = step("a", "", 30, 5), step("b", "", 90, 5)
    assert bench.time_box(a, [a, b], 200, None) == pytest.approx(50)  # 30 / 120 of 200
    assert bench.time_box(b, [b], 150, None) == pytest.approx(150)  # the last takes the rest
    assert bench.time_box(a, [a, b], 200, 12) == 12  # --step-timeout caps it
    assert bench.time_box(a, [a, b], 12, None) == 5  # its minimum over a smaller share
    assert bench.time_box(a, [a, b], 4.9, None) is None  # less than its minimum left
    assert bench.time_box(step("c", "", 1, 40), [a, b], 39.9, None) is None  # too little left


def _wheel(folder: Path, module: str) -> None:
    """A minimal pure-python wheel holding ``module`` (version 0.1)."""
    dist = module.replace("_", "-")
    info = f"{module}-0.1.dist-info"
    files = {
        f"{module}/__init__.py": "__version__ = '0.1'\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / f"{module}-0.1-py3-none-any.whl", "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)


def test_a_missing_peer_is_installed_from_the_wheels_folder(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # ensure_package puts the site first
    module = f"agcl_suite_probe_{os.getpid()}"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    site = tmp_path / "site"
    missing = bench.ensure_package(module, module, wheels=tmp_path / "none", site=site)
    assert missing == {"version": None, "source": "missing", "note": "no none/ folder"}
    nothing = bench.ensure_package(module, module, wheels=wheels, site=site, modes=("target",))
    assert nothing["version"] is None and nothing["attempts"][0]["returncode"] != 0
    _wheel(wheels, module)
    got = bench.ensure_package(module, module, wheels=wheels, site=site, modes=("target",))
    try:
        assert got["version"] == "0.1" and got["site_dir"] == str(site), got
        assert got["source"] == "installed from wheels/ (target)"
        assert (site / module / "__init__.py").is_file()
    finally:
        sys.modules.pop(module, None)
    assert bench.ensure_package("pytest", "pytest", wheels=wheels, site=site) == {
        "version": pytest.__version__,
        "source": "present",
    }


def _loss_summary(**over):
    rows = [
        {"M": 64, "D": 8, "dtype": "float32", "backend": "mm3", "time_s": 1.0},
        {
            "M": 64,
            "D": 8,
            "dtype": "float32",
            "backend": "triton",
            "time_s": 0.8,
            "x_mm3": 0.8,
            "peak_mb": 2.0,
        },
        {"M": 64, "D": 8, "dtype": "bfloat16", "backend": "triton", "time_s": 1.3, "x_mm3": 1.3},
        {"M": 64, "D": 8, "dtype": "float32", "backend": "naive", "time_s": 1.0, "peak_mb": 100.0},
        {"M": 32, "D": 8, "dtype": "float32", "backend": "naive", "time_s": 1.0, "peak_mb": 1.0},
        {"M": 32, "D": 8, "dtype": "float32", "backend": "pml", "time_s": 3.0},
        {"M": 32, "D": 8, "dtype": "float32", "backend": "loss_triton", "time_s": 0.2},
    ]
    base = {
        "rows": rows,
        "reference": {"speed_M": 64, "speed_D": 8, "pml_M": 32},
        "sizes": {"dtypes": ["bfloat16", "float32"]},
    }
    return {**base, **over}


def test_targets_read_the_measurements(bench):
    import _gpu_suite_report as rep

    check = {
        "all_ok": True,
        "kernel": [{"dtype": d, "ok": True} for d in ("float32", "float16", "bfloat16")],
        "variants": [],
    }
    pipe = {
        "num_workers_default": 0,
        "runs": [
            {"stage": "pretrain", "workers": 2, "wait_share": 0.01, "steps": 5},
            {"stage": "pretrain", "workers": 0, "wait_share": 0.25, "steps": 5},
        ],
    }
    report = {
        "steps": [
            {"name": "loss", "summary": _loss_summary()},
            {"name": "gpu_check", "summary": check},
            {"name": "pipeline", "summary": pipe},
        ]
    }
    got = {
        (t["target"], t["where"].split(",")[-1].strip()): t for t in rep.targets(report, Path("."))
    }
    speed = [t for k, t in got.items() if k[0].startswith("Triton fwd+bwd")]
    assert [(t["value"], t["verdict"]) for t in speed] == [(1.3, "fail"), (0.8, "pass")]
    mem = next(t for k, t in got.items() if k[0].startswith("Triton peak memory"))
    assert (mem["value"], mem["verdict"]) == (0.02, "pass")  # 2 / 100 at M = 64, not M = 32
    pml = next(t for k, t in got.items() if "pytorch-metric-learning" in k[0])
    assert (pml["value"], pml["verdict"]) == (15.0, "pass")
    acc = next(t for k, t in got.items() if k[0].startswith("no NaN"))
    assert acc["verdict"] == "pass"
    wait = next(t for k, t in got.items() if "DataLoader" in k[0])
    assert (wait["value"], wait["verdict"]) == (0.25, "fail")  # the default workers' run

    check["kernel"][2]["ok"] = False
    check["all_ok"] = False
    acc = [t for t in rep.targets(report, Path(".")) if t["target"].startswith("no NaN")][0]
    assert acc["verdict"] == "fail"
    check["kernel"] = check["kernel"][:2]
    check["all_ok"] = True
    acc = [t for t in rep.targets(report, Path(".")) if t["target"].startswith("no NaN")][0]
    assert acc["verdict"] == "incomplete" and "not run: bfloat16" in acc["value"]


def test_loss_skips_what_would_not_finish(bench):
    import gpu_loss
    import torch
    from _gpu_common import Deadline

    history = [
        {
            "M": 1024,
            "D": 128,
            "dtype": "float32",
            "backend": "triton",
            "first_call_s": 2.0,
            "time_s": 0.5,
        }
    ]
    # M**2 D scaling from the largest measured row: (2 + 3 x 0.5) x 4**2 = 56 s
    assert gpu_loss._estimate_s(history, "triton", 4096, 128, "float32", 3) == pytest.approx(56)
    assert gpu_loss._estimate_s(history, "triton", 1024, 256, "float32", 3) == pytest.approx(7)
    assert gpu_loss._estimate_s(history, "torch", 4096, 128, "float32", 3) is None
    args = argparse.Namespace(dry_run=False, deadline_s=30.0, runs=3)
    keys = {"M": 4096, "D": 128, "dtype": "float32", "backend": "triton"}
    reason = gpu_loss._skip_reason(
        "triton",
        keys,
        args,
        Deadline(30.0),
        {"rows": history},
        True,
        None,
        torch,
        torch.device("cpu"),
        torch.float32,
    )
    assert reason.startswith("estimated 56 s") and "left before --deadline-s" in reason
    small = {**keys, "M": 1024}
    assert (
        gpu_loss._skip_reason(
            "triton",
            small,
            args,
            Deadline(30.0),
            {"rows": history},
            True,
            None,
            torch,
            torch.device("cpu"),
            torch.float32,
        )
        is None
    )
    big = gpu_loss._skip_reason(
        "naive",
        small,
        args,
        Deadline(30.0),
        {"rows": []},
        True,
        0.001,
        torch,
        torch.device("cpu"),
        torch.float32,
    )
    assert big.startswith("would not fit: estimated")  # 5 x 1024**2 x 4 bytes > 1 MiB


def test_tune_reads_the_autotuners_pick_per_dtype(bench):
    import gpu_tune
    import triton

    f32 = triton.Config({"BLOCK_M": 64, "BLOCK_N": 128}, num_warps=4, num_stages=3)
    b16 = triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=4)
    assert gpu_tune._as_tuple(str(f32)) == (64, 128, 4, 3)
    assert gpu_tune._as_tuple(None) is None
    cache = {
        (4096, 128, "torch.float32", "torch.float32"): f32,
        (4096, 128, "torch.bfloat16", "torch.float32"): b16,
        (8192, 128, "torch.bfloat16", "torch.float32"): f32,
    }
    mt = SimpleNamespace(
        _lse_fwd_tuned=SimpleNamespace(cache=cache), _lse_bwd_tuned=SimpleNamespace(cache={})
    )
    import torch

    picks = gpu_tune._autotuned_pick(mt, 4096, 128, torch.bfloat16)
    assert picks == {"fwd": str(b16), "bwd": None}
    assert gpu_tune._autotuned_pick(mt, 4096, 128, torch.float32)["fwd"] == str(f32)


@pytest.mark.slow
def test_dry_run_of_every_step(tmp_path):
    # 1-2.5 minutes on a 2-core CPU: every step, the optional tune step too, at toy size
    proc, report, md, _ = _suite(tmp_path, "--tune", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = ["env", "pytest_cuda", "gpu_check", "loss", "demo", "pipeline", "tune"]
    assert [s["name"] for s in report["steps"]] == names
    for s in report["steps"]:
        assert s["status"] == "ok", (s["name"], s.get("stderr_tail"))
        assert s["seconds"] > 0 and s["timeout_s"] >= s["seconds"] and s["summary"]
        assert f"| {s['name']} | ok |" in md
    steps = {s["name"]: s["summary"] for s in report["steps"]}
    assert steps["pytest_cuda"]["tests"] > 0
    assert steps["pytest_cuda"]["skipped"] == steps["pytest_cuda"]["tests"]
    assert steps["gpu_check"]["all_ok"] is True
    backends = {r["backend"] for r in steps["loss"]["rows"]}
    assert {"mm3", "triton", "torch", "naive", "loss_triton"} <= backends
    assert any("would not fit" in r["reason"] for r in steps["loss"]["skipped"])
    assert 0 <= steps["demo"]["mean_dice"] <= 1
    runs = steps["pipeline"]["runs"]
    assert [(r["stage"], r["workers"]) for r in runs] == [
        ("pretrain", 0),
        ("segment", 0),
        ("pretrain", 1),
        ("segment", 1),
    ]
    assert all(r["patches_per_s"] > 0 and 0 <= r["wait_share"] < 1 for r in runs)
    assert all(s["ok"] == s["tried"] > 0 for s in steps["tune"]["summary"])
    verdicts = {t["target"]: t["verdict"] for t in report["targets"]}
    assert verdicts["no NaN, gradients within the self-check tolerances"] == "incomplete"
    assert "Dry run on the CPU at toy sizes" in md and "only show that the suite computes" in md
    for name in names:
        assert f"## {name}" in md


def test_the_demo_dry_run_uses_the_test_suites_tiny_settings(bench):
    # the suite cannot import tests/ on the GPU machine, so it keeps its own copy; this keeps the
    # copy equal to the settings the example tests run in seconds
    from tests.pipeline._tiny import TINY_ARGS

    assert bench.DEMO_DRY == TINY_ARGS
