"""The first GPU run in one command: every GPU check in order, each timed and time-boxed.

    python benchmarks/gpu_suite.py --out runs/gpu                      # on the GPU machine
    python benchmarks/gpu_suite.py --out /tmp/gpu-dry --dry-run        # each step at toy size, CPU
    python benchmarks/gpu_suite.py --out runs/gpu --steps loss,pipeline --time-budget 300
    python benchmarks/gpu_suite.py --out runs/tune --steps env,tune    # tile configs, one by one
    python benchmarks/gpu_suite.py --list                              # the steps, nothing run

Steps, in this order (``tune`` only when named in ``--steps`` or with ``--tune``):

  env          the machine: GPU, driver, CUDA, cuDNN, torch, triton, python and the peer packages;
               a missing peer is installed from a ``.whl/`` folder at the repository root when
               there is one (``pip install --no-index --find-links .whl``; ``--no-deps``, then
               ``--target .whl/site-<python>`` if that fails)
  pytest_cuda  every ``cuda``-marked test (``pytest -m cuda tests``)
  gpu_check    benchmarks/gpu_check.py: the kernel against the torch backend, forward and
               gradients, fp32/fp16/bf16, ragged M and D, ``anchor_start``, the queue's
               ``grad_rows``, the whole loss
  loss         benchmarks/gpu_loss.py: speed and memory at M in {16384, 65536, 262144}, D in
               {128, 256}, bf16 and fp32 (Triton, torch backend, naive, pytorch-metric-learning,
               three torch.mm)
  demo         examples/btcv_full.py --device cuda (time, held-out mean Dice)
  pipeline     benchmarks/gpu_pipeline.py: the paper preset's stages 2-3 on two BTCV-size
               phantoms (patches/s, peak memory, the DataLoader's share of the step time)
  tune         benchmarks/gpu_tune.py: the kernel's tile configurations one by one (report only)

Each step is a separate process (group) with a time box: a crash, a hang or a CUDA error in one
step is recorded (status, seconds, the tail of its stderr, e.g. the traceback) and the suite goes
on. The time boxes share ``--time-budget`` (default 500 s, one 9-minute call of the GPU machine
with room to start) in proportion to each step's weight, re-divided after every step, so time a
step does not use goes to the next; a step that would get less than its minimum is skipped and
says so. The scripts size themselves to their box (``--deadline-s``) and list what they left
out. ``DIR/gpu_suite.json`` and ``DIR/gpu_suite.md`` are rewritten after every step; each step's
stdout, stderr and JSON are kept under ``DIR/steps/``.

``--dry-run`` runs every step at toy size on the CPU (the Triton kernel under
``TRITON_INTERPRET=1``): it checks the suite itself, and no figure it writes is a GPU figure.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import _gpu_suite_report as rep

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
WHEELS = ROOT / ".whl"
MARKER = ".agcl-gpu-suite"
DEFAULT_BUDGET_S = 500.0
# The budget kept back for writing the reports after the last step.
RESERVE_S = 3.0


@dataclass(frozen=True)
class Step:
    """One step: its weight in the budget, the least time it needs, the modules it imports."""

    name: str
    what: str
    share: float
    min_s: float
    needs: tuple[str, ...] = ()
    optional: bool = False


STEPS: tuple[Step, ...] = (
    Step("env", "machine, GPU, driver and versions; missing peers installed from .whl/", 30, 20),
    Step("pytest_cuda", "every cuda-marked test (pytest -m cuda)", 90, 30, ("pytest",)),
    Step(
        "gpu_check",
        "kernel vs torch backend: forward, gradients, dtypes, ragged shapes, "
        "anchor_start, grad_rows, the whole loss",
        80,
        30,
    ),
    Step("loss", "loss speed and peak memory against three torch.mm", 120, 30),
    Step(
        "demo",
        "the default demo examples/btcv_full.py on the device",
        100,
        40,
        ("nibabel", "scipy", "tqdm"),
    ),
    Step(
        "pipeline",
        "paper preset stages 2-3: patches/s, peak memory, DataLoader wait",
        80,
        40,
        ("scipy",),
    ),
    Step(
        "tune", "the kernel's tile configurations one by one (report only)", 200, 30, optional=True
    ),
)
STEP_NAMES = tuple(s.name for s in STEPS)
# Peer packages: import name -> distribution name (what pip installs from .whl/).
PEERS = {
    "numpy": "numpy",
    "scipy": "scipy",
    "nibabel": "nibabel",
    "tqdm": "tqdm",
    "triton": "triton",
    "pytest": "pytest",
    "hypothesis": "hypothesis",
    "pytorch_metric_learning": "pytorch-metric-learning",
    "matplotlib": "matplotlib",
}
# The demo's toy run: tests/pipeline/_tiny.py's TINY_ARGS (a test keeps the two equal).
DEMO_DRY = [
    "--n-cases",
    "2",
    "--synthetic-shape",
    "48",
    "48",
    "12",
    "--synthetic-spacing",
    "7.3",
    "7.3",
    "16.0",
    "--attention",
    "gt",
    "--coarse-epochs",
    "2",
    "--epochs",
    "1",
    "--set",
    "organs=[1,6,7]",
    "--set",
    "coarse.spacing_mm=[21.9,21.9,24]",
    "--set",
    "coarse.crop_shape=[12,12,8]",
    "--set",
    "coarse.base_channels=2",
    "--set",
    "coarse.depth=1",
    "--set",
    "pretrain.base_width=4",
    "--set",
    "pretrain.patch_size=16",
    "--set",
    "pretrain.patches_per_slice=1",
    "--set",
    "pretrain.max_patches_per_volume=12",
    "--set",
    "pretrain.batch_size=8",
    "--set",
    "segment.patches_per_slice=1",
    "--set",
    "segment.max_patches_per_volume=12",
    "--set",
    "segment.aspp_channels=8",
    "--set",
    "segment.stride=16",
]
INJECTED = {
    "raise": "raise RuntimeError('injected failure in step {name} (--inject-failure)')",
    "hang": "import os, time\nprint(f'step {name} hangs (pid {{os.getpid()}}, "
    "--inject-failure)', flush=True)\ntime.sleep(10**6)",
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--out", type=Path, help="the folder for gpu_suite.json, gpu_suite.md, steps/")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="every step at toy size on the CPU (checks the suite; no GPU figures)",
    )
    p.add_argument(
        "--steps",
        type=_step_list,
        default=None,
        help=f"comma-separated subset, run in the suite's order: {','.join(STEP_NAMES)}",
    )
    p.add_argument("--tune", action="store_true", help="add the tune step")
    p.add_argument(
        "--time-budget",
        type=_positive,
        default=DEFAULT_BUDGET_S,
        metavar="S",
        help="seconds for all steps together (default %(default)s)",
    )
    p.add_argument(
        "--step-timeout",
        type=_positive,
        default=None,
        metavar="S",
        help="cap every step's time box at S seconds",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier suite run in --out (only the suite's own files)",
    )
    p.add_argument("--list", action="store_true", help="print the steps and exit")
    p.add_argument(
        "--inject-failure",
        action="append",
        default=[],
        metavar="STEP=raise|hang",
        help="replace STEP by a process that raises or hangs (tests the suite's "
        "failure and time-box handling)",
    )
    p.add_argument("--env-report", type=Path, help=argparse.SUPPRESS)  # the env step's child
    args = p.parse_args(argv)
    if not args.list and args.env_report is None and args.out is None:
        p.error("--out is required (the folder for the reports)")
    args.injected = {}
    for item in args.inject_failure:
        name, _, mode = item.partition("=")
        if name not in STEP_NAMES or mode not in INJECTED:
            p.error(
                f"--inject-failure must be STEP=raise or STEP=hang with STEP one of "
                f"{', '.join(STEP_NAMES)}; got {item!r}"
            )
        args.injected[name] = mode
    return args


def _step_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in STEP_NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"steps must be a comma-separated subset of {','.join(STEP_NAMES)}; got {text!r}"
        )
    return names


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds; got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0; got {text!r}")
    return value


def selected(args: argparse.Namespace) -> list[Step]:
    """The steps to run, in the suite's order."""
    names = set(args.steps or [s.name for s in STEPS if not s.optional])
    if args.tune:
        names.add("tune")
    return [s for s in STEPS if s.name in names]


# ----------------------------------------------------------------------------- time boxes
def time_box(step: Step, todo: list[Step], left: float, cap: float | None) -> float | None:
    """The step's timeout: its share of the time left among the steps still to run (at least
    its minimum, at most what is left); None when less than its minimum is left."""
    if left < step.min_s:
        return None
    box = max(step.min_s, left * step.share / sum(s.share for s in todo))
    box = min(box, left)
    return box if cap is None else min(box, cap)


def _deadline(box: float) -> float:
    """What a step's script is told: leave it time to write its JSON before the box ends."""
    return max(1.0, 0.85 * box - 3.0)


# ----------------------------------------------------------------------------- commands
def command(step: Step, ctx: dict[str, Any]) -> list[str]:
    """The step's command line (run from the repository root)."""
    py, dry, out = sys.executable, ctx["dry_run"], ctx["step_dir"]
    result = str(out / f"{step.name}.json")
    deadline = ["--deadline-s", f"{_deadline(ctx['box']):.0f}"]
    if step.name == "env":
        return [py, str(Path(__file__).resolve()), "--env-report", result]
    if step.name == "pytest_cuda":
        return [
            py,
            "-m",
            "pytest",
            "-m",
            "cuda",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rfEs",
            f"--junitxml={out / 'pytest_cuda.xml'}",
            "tests",
        ]
    if step.name == "gpu_check":
        sizes = (
            ["--interpret", "--m", "37", "--d", "16", "40", "--runs", "1"]
            if dry
            else ["--m", "4097", "65536", "--d", "128", "200"]
        )
        return [py, str(BENCH / "gpu_check.py"), "--json", result, "--no-tests", *sizes, *deadline]
    if step.name == "demo":
        run = ctx["out"] / "demo"
        cmd = [
            py,
            str(ROOT / "examples" / "btcv_full.py"),
            "--device",
            "cpu" if dry else "cuda",
            "--out",
            str(run / "run"),
            "--cache-dir",
            str(run / "cache"),
            "--no-figures",
        ]
        return cmd + (DEMO_DRY if dry else [])
    script = {"loss": "gpu_loss.py", "pipeline": "gpu_pipeline.py", "tune": "gpu_tune.py"}
    return [
        py,
        str(BENCH / script[step.name]),
        "--json",
        result,
        *deadline,
        *(["--dry-run"] if dry else []),
    ]


def child_env(dry: bool, site: str | None) -> dict[str, str]:
    paths = [str(ROOT)] + ([site] if site else [])
    old = os.environ.get("PYTHONPATH")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths + ([old] if old else [])),
        "PYTHONUNBUFFERED": "1",
    }
    if dry:
        env["TRITON_INTERPRET"] = "1"
    return env


def run_step(
    cmd: list[str], *, env: dict[str, str], timeout: float, logs: Path
) -> tuple[int | None, float, bool]:
    """Run ``cmd`` in its own process group; on timeout end that group. Returns (returncode,
    seconds, timed_out); stdout and stderr go to ``logs``.out / .err."""
    t0 = time.monotonic()
    with open(logs.with_suffix(".out"), "wb") as out, open(logs.with_suffix(".err"), "wb") as err:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        _end_group(proc)
    return (None if timed_out else proc.returncode), time.monotonic() - t0, timed_out


def _end_group(proc: subprocess.Popen) -> None:
    """End what is left of the step's process group (the step itself after a timeout, and any
    DataLoader worker or pytest child it left behind): SIGTERM, 5 s, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):  # the group is empty: nothing left
            break
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass
    proc.wait()


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-chars:]


# ----------------------------------------------------------------------------- the suite
def prepare_out(out: Path, overwrite: bool) -> None:
    if (out / "gpu_suite.json").exists():
        if not overwrite:
            raise SystemExit(
                f"{out} already holds a suite run (gpu_suite.json); pass --overwrite "
                "to replace it, or choose another --out"
            )
        if (out / MARKER).exists():  # only folders this suite made
            for sub in ("steps", "demo"):
                shutil.rmtree(out / sub, ignore_errors=True)
    (out / "steps").mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by benchmarks/gpu_suite.py\n", encoding="utf-8")


def print_plan(steps: list[Step], args: argparse.Namespace) -> None:
    mode = "dry run (CPU, toy sizes)" if args.dry_run else "GPU"
    print(f"agcl GPU suite, {mode}, time budget {args.time_budget:g} s:")
    for s in steps:
        need = f" (needs {', '.join(s.needs)})" if s.needs else ""
        print(f"  {s.name:<12} weight {s.share:>4g}, at least {s.min_s:>3g} s: {s.what}{need}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.env_report is not None:
        return env_report(args.env_report)
    steps = selected(args)
    print_plan(steps, args)
    if args.list:
        return 0
    out: Path = args.out.resolve()
    prepare_out(out, args.overwrite)
    start = time.monotonic()
    report: dict[str, Any] = {
        "suite": {
            "command": [sys.executable, *sys.argv],
            "dry_run": args.dry_run,
            "time_budget_s": args.time_budget,
            "step_timeout_s": args.step_timeout,
            "started_utc": _now(),
            "root": str(ROOT),
            "steps": [s.name for s in steps],
        },
        "machine": {},
        "steps": [],
        "targets": [],
    }
    site: str | None = None
    packages: dict[str, Any] | None = None
    for i, step in enumerate(steps):
        left = args.time_budget - (time.monotonic() - start) - RESERVE_S
        box = time_box(step, steps[i:], left, args.step_timeout)
        entry: dict[str, Any] = {"name": step.name, "what": step.what}
        missing = [
            m for m in step.needs if packages is not None and not packages.get(m, {}).get("version")
        ]
        if box is None:
            entry.update(
                status="skipped",
                seconds=0.0,
                reason=f"time budget: {max(left, 0):.0f} s left, the step needs at "
                f"least {step.min_s:g} s",
            )
        elif missing:
            entry.update(
                status="skipped",
                seconds=0.0,
                reason=f"missing {', '.join(missing)} (put the wheels in .whl/)",
            )
        else:
            ctx = {"dry_run": args.dry_run, "out": out, "step_dir": out / "steps", "box": box}
            cmd = command(step, ctx)
            if step.name in args.injected:
                code = INJECTED[args.injected[step.name]].format(name=step.name)
                cmd = [sys.executable, "-c", code]
            print(f"[{step.name}] time box {box:.0f} s: {' '.join(cmd)}", flush=True)
            rc, seconds, timed_out = run_step(
                cmd, env=child_env(args.dry_run, site), timeout=box, logs=out / "steps" / step.name
            )
            entry.update(
                command=cmd, timeout_s=round(box, 1), seconds=round(seconds, 2), returncode=rc
            )
            status, summary = rep.summarize(step.name, out, rc, dry_run=args.dry_run)
            if timed_out:
                status = "timeout"
                entry["reason"] = f"still running after its {box:.0f} s time box; ended"
            elif rc != 0 and status == "ok":
                status = "failed"
            entry.update(status=status, summary=summary)
            if status != "ok":
                entry["stderr_tail"] = _tail(out / "steps" / f"{step.name}.err")
                entry["stdout_tail"] = _tail(out / "steps" / f"{step.name}.out", 1500)
            if step.name == "env" and summary:
                report["machine"] = summary.get("machine", {})
                packages = summary.get("packages")
                site = summary.get("site_dir")
        print(
            f"[{step.name}] {entry['status']} in {entry.get('seconds', 0):.1f} s"
            + (f": {entry['reason']}" if "reason" in entry else ""),
            flush=True,
        )
        report["steps"].append(entry)
        _finish(report, out, start)
    _finish(report, out, start)
    print(f"wrote {out / 'gpu_suite.json'} and {out / 'gpu_suite.md'}")
    return 1 if any(e["status"] in ("failed", "timeout") for e in report["steps"]) else 0


def _finish(report: dict, out: Path, start: float) -> None:
    report["suite"]["seconds"] = round(time.monotonic() - start, 2)
    report["suite"]["finished_utc"] = _now()
    report["targets"] = rep.targets(report, out)
    tmp = out / "gpu_suite.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, out / "gpu_suite.json")
    (out / "gpu_suite.md").write_text(rep.markdown(report, out), encoding="utf-8")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------- the env step
def ensure_package(
    module: str,
    dist: str,
    *,
    wheels: Path,
    site: Path,
    modes: tuple[str, ...] = ("deps", "no-deps", "target"),
) -> dict[str, Any]:
    """``module``'s version, installing ``dist`` from the ``wheels`` folder when it is missing.

    Installation tries, in order, ``modes``: ``"deps"`` (``pip install --no-index
    --find-links wheels dist``, dependencies from the folder too), ``"no-deps"`` (the wheel
    alone) and ``"target"`` (the wheel alone into ``site``, put first on ``sys.path``; for a
    Python that refuses installs, PEP 668). The first whose module then imports wins.

    Returns:
        ``{"version": str | None, "source": "present" | "installed ..." | "missing", ...}``
        with the pip attempts (command and output tail) when there were any.
    """
    if importlib.util.find_spec(module) is not None:
        return {"version": _version(module, dist), "source": "present"}
    if not wheels.is_dir():
        return {"version": None, "source": "missing", "note": f"no {wheels.name}/ folder"}
    attempts = []
    for mode in modes:
        extra = {
            "deps": [],
            "no-deps": ["--no-deps"],
            "target": ["--no-deps", "--target", str(site)],
        }[mode]
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--find-links",
            str(wheels),
            "--disable-pip-version-check",
            "--no-input",
            *extra,
            dist,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-1500:]
        except subprocess.TimeoutExpired:
            rc, tail = None, "pip timed out after 120 s"
        attempt: dict[str, Any] = {"mode": mode, "command": cmd, "returncode": rc, "tail": tail}
        attempts.append(attempt)
        if rc != 0:
            continue
        if mode == "target" and str(site) not in sys.path:
            sys.path.insert(0, str(site))
        importlib.invalidate_caches()
        try:
            importlib.import_module(module)
        except Exception as exc:  # installed but unusable (a dependency missing, say)
            attempt["import_error"] = f"{type(exc).__name__}: {exc}"[:500]
            continue
        out = {
            "version": _version(module, dist),
            "source": f"installed from {wheels.name}/ ({mode})",
            "attempts": attempts,
        }
        if mode == "target":
            out["site_dir"] = str(site)
        return out
    return {"version": None, "source": "missing", "attempts": attempts}


def _version(module: str, dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        mod = importlib.import_module(module)
        return str(getattr(mod, "__version__", "unknown"))


def _nvidia_smi() -> dict[str, Any]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"nvidia_smi": None}
    try:
        proc = subprocess.run(
            [
                exe,
                "--query-gpu=name,driver_version,memory.total,compute_cap",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"nvidia_smi": f"failed: {exc}"}
    gpus = [
        dict(zip(("name", "driver", "memory", "compute_cap"), (x.strip() for x in line.split(","))))
        for line in proc.stdout.strip().splitlines()
        if line.strip()
    ]
    return {"nvidia_smi": gpus, "driver": gpus[0]["driver"] if gpus else None}


def env_report(path: Path) -> int:
    """The env step's child: record the machine, install missing peers, write ``path`` (after
    each part, so that a time box ending it early still leaves what it found)."""
    import platform

    machine: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        **_nvidia_smi(),
        "wheels_folder": WHEELS.is_dir(),
    }
    result: dict[str, Any] = {"machine": machine, "packages": {}}

    def save() -> None:
        path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")

    save()
    import torch

    machine.update(
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        cuda_available=torch.cuda.is_available(),
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        matmul_allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
    )
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        machine.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_count=torch.cuda.device_count(),
            gpu_capability=list(torch.cuda.get_device_capability(0)),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    save()
    site = WHEELS / f"site-py{sys.version_info[0]}.{sys.version_info[1]}"
    for module, dist in PEERS.items():
        found = ensure_package(module, dist, wheels=WHEELS, site=site)
        result["packages"][module] = found
        if found.get("site_dir"):
            result["site_dir"] = found["site_dir"]
        save()
    machine["triton"] = result["packages"]["triton"]["version"]
    save()
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
