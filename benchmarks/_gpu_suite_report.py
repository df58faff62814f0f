"""The GPU suite's reading of its steps' outputs: per-step status and summary, the issue's
targets, and the Markdown report. Standard library only (the suite's parent process imports no
torch). Not a public module: benchmarks/gpu_suite.py imports it as ``_gpu_suite_report``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

DRY_BANNER = (
    "> **Dry run on the CPU at toy sizes.** It checks the suite itself; no time, memory "
    "or ratio below is a GPU measurement, and the target verdicts say nothing about a "
    "GPU."
)


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _no_result(path: Path) -> tuple[str, dict]:
    return "failed", {"error": f"the step wrote no result ({path.name} missing or unreadable)"}


# ----------------------------------------------------------------------------- per step
def _env(out: Path, rc: int | None, dry: bool) -> tuple[str, dict]:
    data = _load(out / "steps" / "env.json")
    return ("ok", data) if data else _no_result(out / "steps" / "env.json")


def _pytest(out: Path, rc: int | None, dry: bool) -> tuple[str, dict]:
    path = out / "steps" / "pytest_cuda.xml"
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return _no_result(path)
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    count = {
        k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")
    }
    failing = []
    for case in root.iter("testcase"):
        bad = case.find("failure")
        bad = bad if bad is not None else case.find("error")
        if bad is not None:
            msg = (bad.get("message") or "").splitlines()[:1]
            failing.append(f"{case.get('classname')}::{case.get('name')}: {' '.join(msg)}"[:300])
    summary = {
        **count,
        "passed": count["tests"] - count["failures"] - count["errors"] - count["skipped"],
        "failing": failing,
    }
    if rc == 5 or count["tests"] == 0:
        summary["note"] = "no cuda-marked test was collected"
        return "failed", summary
    if dry and count["skipped"] == count["tests"]:
        summary["note"] = "dry run: every cuda-marked test skips without a GPU"
    return ("ok" if rc == 0 else "failed"), summary


def _gpu_check(out: Path, rc: int | None, dry: bool) -> tuple[str, dict]:
    data = _load(out / "steps" / "gpu_check.json")
    if data is None:
        return _no_result(out / "steps" / "gpu_check.json")
    keep = (
        "M",
        "D",
        "dtype",
        "variant",
        "max_abs_diff",
        "max_abs_diff_f64",
        "max_rel_grad_diff",
        "kernel_x_mm3",
        "kernel_peak_mb",
        "ok",
        "error",
    )
    summary = {
        "all_ok": data.get("all_ok", False),
        "seconds": data.get("seconds"),
        "kernel": [{k: r[k] for k in keep if k in r} for r in data["kernel_vs_torch"]],
        "variants": [{k: r[k] for k in keep if k in r} for r in data["variants"]],
        "loss": data.get("loss", []),
        "pml": data.get("pml", []),
        "skipped": data.get("skipped", []),
    }
    return ("ok" if summary["all_ok"] else "failed"), summary


def _loss(out: Path, rc: int | None, dry: bool) -> tuple[str, dict]:
    data = _load(out / "steps" / "loss.json")
    if data is None:
        return _no_result(out / "steps" / "loss.json")
    rows = data.get("rows", [])
    summary = {
        k: data.get(k) for k in ("reference", "sizes", "rows", "skipped", "autotuned", "seconds")
    }
    bad = [r for r in rows if "error" in r or r.get("finite") is False]
    summary["problems"] = len(bad)
    return ("ok" if rows and not bad else "failed"), summary


def _demo(out: Path, rc: int | None, dry: bool) -> tuple[str, dict]:
    path = out / "demo" / "run" / "results.json"
    data = _load(path)
    if data is None:
        return _no_result(path)
    mean = data.get("mean", {})
    return "ok", {
        "mean_dice": mean.get("dice"),
        "mean_hd95": mean.get("hd95"),
        "runtime_s": data.get("runtime_s"),
        "results": str(path),
    }


def _pipeline(out: Path, rc: int | None, dry: bool) -> tuple[str, dict]:
    data = _load(out / "steps" / "pipeline.json")
    if data is None:
        return _no_result(out / "steps" / "pipeline.json")
    runs = data.get("runs", [])
    summary = {
        k: data.get(k)
        for k in ("phantoms", "data_prep_s", "loss_backend", "amp", "runs", "skipped", "seconds")
    }
    summary["num_workers_default"] = (data.get("config") or {}).get("data", {}).get("num_workers")
    good = runs and all(r.get("finite") for r in runs) and any("patches_per_s" in r for r in runs)
    return ("ok" if good else "failed"), summary


def _tune(out: Path, rc: int | None, dry: bool) -> tuple[str, dict]:
    data = _load(out / "steps" / "tune.json")
    if data is None:
        return _no_result(out / "steps" / "tune.json")
    summary = {
        "summary": data.get("summary", []),
        "tried": len(data.get("rows", [])),
        "skipped": data.get("skipped", []),
    }
    return ("ok" if data.get("rows") else "failed"), summary


_SUMMARIES: dict[str, Callable[[Path, int | None, bool], tuple[str, dict]]] = {
    "env": _env,
    "pytest_cuda": _pytest,
    "gpu_check": _gpu_check,
    "loss": _loss,
    "demo": _demo,
    "pipeline": _pipeline,
    "tune": _tune,
}


def summarize(name: str, out: Path, rc: int | None, *, dry_run: bool) -> tuple[str, dict]:
    """``(status, summary)`` of step ``name`` from the files it wrote under ``out``."""
    try:
        return _SUMMARIES[name](out, rc, dry_run)
    except Exception as exc:  # a malformed result is the step's failure, not the suite's
        return "failed", {"error": f"reading the step's result: {type(exc).__name__}: {exc}"}


# ----------------------------------------------------------------------------- targets
def _target(name: str, threshold: str, value: Any, verdict: str, where: str = "") -> dict:
    return {
        "target": name,
        "threshold": threshold,
        "value": value,
        "verdict": verdict,
        "where": where,
    }


def _pick(rows: list[dict], **match: Any) -> dict | None:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()) and "time_s" in r:
            return r
    return None


def targets(report: dict, out: Path) -> list[dict]:
    """The issue's targets, each with the measured value and a verdict: pass, fail,
    incomplete (part measured) or not measured."""
    steps = {e["name"]: e.get("summary") or {} for e in report["steps"]}
    loss, found = steps.get("loss", {}), []
    rows, ref = loss.get("rows") or [], loss.get("reference") or {}
    dtypes = (loss.get("sizes") or {}).get("dtypes", [])
    m, d = ref.get("speed_M"), ref.get("speed_D")
    for dt in dtypes:  # Triton fwd + bwd against three torch.mm, same dtype
        r = _pick(rows, M=m, D=d, dtype=dt, backend="triton")
        where = f"M={m}, D={d}, {dt}"
        if r is None or "x_mm3" not in r:
            found.append(
                _target("Triton fwd+bwd / three torch.mm", "<= 1.0", None, "not measured", where)
            )
        else:
            found.append(
                _target(
                    "Triton fwd+bwd / three torch.mm",
                    "<= 1.0",
                    round(r["x_mm3"], 3),
                    "pass" if r["x_mm3"] <= 1.0 else "fail",
                    where,
                )
            )
    found.append(_memory_target(rows))
    pm = ref.get("pml_M")
    pml, ours = (_pick(rows, M=pm, D=d, dtype="float32", backend=b) for b in ("pml", "loss_triton"))
    where = f"M={pm}, D={d}, float32, whole loss"
    if pml and ours:
        x = pml["time_s"] / ours["time_s"]
        found.append(
            _target(
                "speed-up over pytorch-metric-learning SupConLoss",
                ">= 10",
                round(x, 2),
                "pass" if x >= 10 else "fail",
                where,
            )
        )
    else:
        found.append(
            _target(
                "speed-up over pytorch-metric-learning SupConLoss",
                ">= 10",
                None,
                "not measured",
                where,
            )
        )
    found.append(_accuracy_target(steps.get("gpu_check", {})))
    found.append(_wait_target(steps.get("pipeline", {})))
    return found


def _memory_target(rows: list[dict]) -> dict:
    name, threshold = "Triton peak memory / naive backend's", "<= 0.05"
    naive = [r for r in rows if r.get("backend") == "naive" and r.get("peak_mb")]
    if not naive:
        return _target(
            name,
            threshold,
            None,
            "not measured",
            "no CUDA peak of the naive backend (CPU run, or it never fitted)",
        )
    top = max(r["M"] for r in naive)
    ratios, where = [], []
    for r in naive:
        if r["M"] != top:
            continue
        t = _pick(rows, M=top, D=r["D"], dtype=r["dtype"], backend="triton")
        if t and t.get("peak_mb") is not None:
            ratios.append(t["peak_mb"] / r["peak_mb"])
            where.append(f"D={r['D']} {r['dtype']}")
    if not ratios:
        return _target(name, threshold, None, "not measured", f"M={top}: no Triton peak")
    worst = max(ratios)
    return _target(
        name,
        threshold,
        round(worst, 4),
        "pass" if worst <= 0.05 else "fail",
        f"largest M the naive backend fitted: {top} ({', '.join(where)}; worst shown)",
    )


def _accuracy_target(check: dict) -> dict:
    name, threshold = "no NaN, gradients within the self-check tolerances", "every dtype"
    rows = (check.get("kernel") or []) + (check.get("variants") or [])
    if not rows:
        return _target(name, threshold, None, "not measured")
    bad = [r for r in rows if not r.get("ok")]
    seen = sorted({r["dtype"] for r in rows if r.get("ok")})
    absent = [d for d in ("float32", "float16", "bfloat16") if d not in seen]
    value = f"{len(rows) - len(bad)}/{len(rows)} rows ok ({', '.join(seen) or 'none'})"
    if bad or check.get("all_ok") is False:
        return _target(name, threshold, value, "fail")
    if absent:
        return _target(name, threshold, value + f"; not run: {', '.join(absent)}", "incomplete")
    return _target(name, threshold, value, "pass")


def _wait_target(pipe: dict) -> dict:
    name, threshold = "stage 2 DataLoader wait / step time (default workers)", "< 0.10"
    workers = pipe.get("num_workers_default")
    for r in pipe.get("runs") or []:
        if r.get("stage") == "pretrain" and r.get("workers") == workers and "wait_share" in r:
            return _target(
                name,
                threshold,
                round(r["wait_share"], 4),
                "pass" if r["wait_share"] < 0.10 else "fail",
                f"num_workers={workers}, {r.get('steps')} steps",
            )
    return _target(name, threshold, None, "not measured")


# ----------------------------------------------------------------------------- markdown
def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return out


def markdown(report: dict, out: Path) -> str:
    """The suite's report as Markdown: machine, steps, targets, each step's figures, failures."""
    suite, mach = report["suite"], report.get("machine") or {}
    lines = ["# agcl GPU suite", ""]
    if suite["dry_run"]:
        lines += [DRY_BANNER, ""]
    lines += [
        f"Command: `{' '.join(suite['command'])}`",
        "",
        f"Started {suite['started_utc']}, {suite.get('seconds', 0):.0f} s of a "
        f"{suite['time_budget_s']:g} s budget.",
        "",
    ]
    if mach:
        lines += _table(
            ["GPU", "driver", "CUDA (torch)", "cuDNN", "torch", "triton", "python"],
            [
                [
                    mach.get("gpu", "none"),
                    mach.get("driver"),
                    mach.get("torch_cuda"),
                    mach.get("cudnn"),
                    mach.get("torch"),
                    mach.get("triton"),
                    mach.get("python"),
                ]
            ],
        ) + [""]
    lines += ["## Steps", ""]
    lines += _table(
        ["step", "status", "seconds", "time box (s)", "note"],
        [
            [e["name"], e["status"], e.get("seconds"), e.get("timeout_s"), e.get("reason", "")]
            for e in report["steps"]
        ],
    ) + [""]
    lines += ["## Targets (issue 29)", ""]
    if suite["dry_run"]:
        lines += [
            "Toy sizes on the CPU: these verdicts only show that the suite computes them.",
            "",
        ]
    lines += _table(
        ["target", "threshold", "measured", "verdict", "where"],
        [
            [t["target"], t["threshold"], t["value"], t["verdict"], t["where"]]
            for t in report.get("targets", [])
        ],
    ) + [""]
    for e in report["steps"]:
        body = _SECTIONS.get(e["name"], lambda s: [])(e.get("summary") or {})
        if body:
            lines += [f"## {e['name']}", "", *body, ""]
    failed = [e for e in report["steps"] if e["status"] in ("failed", "timeout")]
    if failed:
        lines += ["## Failures", ""]
        for e in failed:
            lines += [f"### {e['name']} ({e['status']}, return code {e.get('returncode')})", ""]
            if (e.get("summary") or {}).get("error"):
                lines += [e["summary"]["error"], ""]
            lines += [
                "```",
                (e.get("stderr_tail") or e.get("stdout_tail") or "").strip()[-3000:],
                "```",
                "",
            ]
    return "\n".join(lines)


def _md_env(s: dict) -> list[str]:
    pk = s.get("packages") or {}
    return _table(
        ["package", "version", "source"],
        [[k, v.get("version"), v.get("source")] for k, v in pk.items()],
    )


def _md_pytest(s: dict) -> list[str]:
    out = [
        f"{s.get('passed')} passed, {s.get('failures')} failed, {s.get('errors')} errors, "
        f"{s.get('skipped')} skipped of {s.get('tests')} cuda-marked tests."
    ]
    if s.get("note"):
        out.append(f"({s['note']})")
    return out + [f"- {f}" for f in s.get("failing", [])]


def _md_check(s: dict) -> list[str]:
    out = [f"All within tolerance: {s.get('all_ok')}.", ""]
    out += _table(
        [
            "M",
            "D",
            "dtype",
            "variant",
            "lse diff",
            "vs f64",
            "dz rel diff",
            "x 3 mm",
            "peak MiB",
            "ok",
        ],
        [
            [
                r.get("M"),
                r.get("D"),
                r.get("dtype"),
                r.get("variant", "all rows"),
                r.get("max_abs_diff"),
                r.get("max_abs_diff_f64"),
                r.get("max_rel_grad_diff"),
                r.get("kernel_x_mm3"),
                r.get("kernel_peak_mb"),
                r.get("error") or r.get("ok"),
            ]
            for r in (s.get("kernel") or []) + (s.get("variants") or [])
        ],
    )
    for r in s.get("loss") or []:
        out.append(
            f"- whole loss M={r.get('M')} D={r.get('D')}: ok={r.get('ok')}, loss diff "
            f"{_fmt(r.get('loss_abs_diff'))}, queue loss diff "
            f"{_fmt(r.get('queue_loss_abs_diff'))}" + (f", {r['error']}" if "error" in r else "")
        )
    return out + _md_skipped(s.get("skipped"))


def _md_skipped(items: list[dict] | None) -> list[str]:
    out = []
    for r in items or []:
        what = ", ".join(f"{k}={v}" for k, v in r.items() if k != "reason")
        out.append(f"- skipped {what}: {r['reason']}")
    return ([""] + out) if out else []


def _md_loss(s: dict) -> list[str]:
    out = _table(
        [
            "M",
            "D",
            "dtype",
            "backend",
            "time (ms)",
            "x 3 mm",
            "first call (s)",
            "peak MiB",
            "finite",
        ],
        [
            [
                r["M"],
                r["D"],
                r["dtype"],
                r["backend"],
                None if "time_s" not in r else 1e3 * r["time_s"],
                r.get("x_mm3"),
                r.get("first_call_s"),
                r.get("peak_mb"),
                r.get("error") or r.get("finite"),
            ]
            for r in s.get("rows") or []
        ],
    )
    return out + _md_skipped(s.get("skipped"))


def _md_demo(s: dict) -> list[str]:
    return [
        f"Held-out mean Dice {_fmt(s.get('mean_dice'), '.4f')}, the run's own runtime "
        f"{_fmt(s.get('runtime_s'), '.1f')} s ({s.get('results')})."
    ]


def _md_pipeline(s: dict) -> list[str]:
    ph = s.get("phantoms") or {}
    out = [
        f"Two phantoms {ph.get('shape')} at {ph.get('spacing_mm')} mm, prepared in "
        f"{_fmt(s.get('data_prep_s'), '.1f')} s; loss backend {s.get('loss_backend')}, "
        f"autocast {s.get('amp')}.",
        "",
    ]
    out += _table(
        [
            "stage",
            "workers",
            "batch",
            "steps",
            "patches/s",
            "step ms (median)",
            "DataLoader wait share",
            "first wait (s)",
            "peak MiB",
            "loss",
        ],
        [
            [
                r.get("stage"),
                r.get("workers"),
                r.get("batch_size"),
                r.get("steps"),
                r.get("patches_per_s"),
                r.get("step_ms_median"),
                r.get("wait_share"),
                r.get("first_wait_s"),
                r.get("peak_gpu_mb"),
                r.get("last_loss"),
            ]
            for r in s.get("runs") or []
        ],
    )
    return out + _md_skipped(s.get("skipped"))


def _md_tune(s: dict) -> list[str]:
    return _table(
        [
            "M",
            "D",
            "dtype",
            "kernel",
            "ok/tried",
            "fastest",
            "ms",
            "autotuned pick",
            "pick / fastest",
        ],
        [
            [
                r["M"],
                r["D"],
                r["dtype"],
                r["kernel"],
                f"{r['ok']}/{r['tried']}",
                r.get("best"),
                None if "best_s" not in r else 1e3 * r["best_s"],
                r.get("autotuned"),
                r.get("autotuned_x_best"),
            ]
            for r in s.get("summary") or []
        ],
    ) + _md_skipped(s.get("skipped"))


_SECTIONS: dict[str, Callable[[dict], list[str]]] = {
    "env": _md_env,
    "pytest_cuda": _md_pytest,
    "gpu_check": _md_check,
    "loss": _md_loss,
    "demo": _md_demo,
    "pipeline": _md_pipeline,
    "tune": _md_tune,
}
