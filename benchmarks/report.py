"""Markdown and JSON output, and the issue-6 target verdicts, from benchmark sections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.torch_candidates import BASELINE

TARGET_SET = "resnet50"


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "" if x is None else format(x, fmt)


def _mb(x: int | None) -> str:
    return "" if x is None else f"{x / 2**20:.1f}"


def _row_md(r: dict[str, Any], keras: bool) -> str:
    if r["status"] != "ok":
        note = f"**{r['status']}**: {r.get('reason') or ''}"
        blanks = 6 if keras else 8
        return f"| {r['label']} |" + " |" * blanks + f" {note} |"
    iqr = ""
    if r.get("p25_ms") is not None:
        iqr = f"{r['p25_ms']:.2f}-{r['p75_ms']:.2f}"
    notes = "; ".join(r.get("notes") or [])
    cells = [r["label"], _f(r.get("median_ms")), iqr, _f(r.get("ratio"))]
    if not keras:
        cells.append(_f(r.get("median_cpu_ms"), ".1f"))
    cells += [_f(r.get("state_bytes_per_param"), ".1f"), _mb(r.get("step_peak_bytes")),
              _f(r.get("first_step_s"), ".3f")]  # fmt: skip
    if not keras:
        cells.append(_f(r.get("max_rel_diff"), ".1e"))
    cells.append(notes)
    return "| " + " | ".join(cells) + " |"


def section_md(sec: dict[str, Any]) -> str:
    if sec.get("status") == "failed":
        return f"### {sec['framework']}: FAILED\n\n```\n{sec.get('error', '')}\n```\n"
    keras = sec["framework"].startswith("keras")
    dtype = f" · {sec['dtype']}" if "dtype" in sec else ""
    head = (
        f"### {sec['framework']} · {sec['device']} · {sec['set']}{dtype} "
        f"({sec['params']:,} params, {sec['tensors']} tensors) · {sec['grad_kind']} gradients\n\n"
        f"{sec['census']}. {sec['rounds']} rounds x {sec['steps_per_round']} timed steps "
        f"per optimizer (after {sec['warmup']} warm-up), interleaved. "
        f"Load average (1/5/15 min) {sec['loadavg_start']} -> {sec['loadavg_end']}."
    )
    if sec.get("from_run"):
        head += f" (Merged from the run of {sec['from_run']}.)"
    if sec.get("carried_over"):
        head += (
            " Same optimizer objects as the previous gradient kind (state carried over; "
            "*1st step* = first, untimed, step on these gradients)."
        )
    if keras:
        head += f" Step: `{sec['step']}`."
        cols = ["optimizer", "median ms", "IQR ms", "x baseline", "state B/param",
                "step peak +MB", "1st step s", "notes"]  # fmt: skip
    else:
        cols = ["optimizer", "median ms", "IQR ms", "x baseline", "CPU ms", "state B/param",
                "step peak +MB", "1st step s", "rel. diff vs authors", "notes"]  # fmt: skip
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rows = sorted(sec["rows"], key=lambda r: r["family"] != "AdamP")
    lines += [_row_md(r, keras) for r in rows]
    if not keras:
        lines += ["", *memory_md(rows)]
    return "\n".join(lines) + "\n"


def memory_md(rows: list[dict[str, Any]]) -> list[str]:
    """The memory table of one torch section: bytes per parameter of the optimizer's state,
    of the scratch it keeps between steps, and of the step's transient peak."""
    lines = [
        "Memory, bytes per parameter: *state* (``optimizer.state``), *kept scratch* (other "
        "tensors the optimizer object keeps), *step peak* (peak RSS growth during a step).",
        "",
        "| optimizer | state B/param | kept scratch B/param | step peak B/param |",
        "|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] == "ok":
            cells = [_f(r.get(f"{k}_bytes_per_param"), ".1f") for k in
                     ("state", "scratch", "step_peak")]  # fmt: skip
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return lines


def _find(sections: list[dict[str, Any]], framework: str, set_name: str, kind: str,
          device: str = "cpu", dtype: str = "float32") -> dict[str, Any] | None:  # fmt: skip
    want = (framework, set_name, kind, device, dtype)
    for s in sections:
        key = ("framework", "set", "grad_kind", "device")
        if (*(s.get(k) for k in key), s.get("dtype", "float32")) == want:
            return s
    return None


def _ok(sec: dict[str, Any] | None, label: str) -> dict[str, Any] | None:
    if sec is None:
        return None
    for r in sec["rows"]:
        if r["label"] == label and r["status"] == "ok" and r.get("median_ms") is not None:
            return r
    return None


def _why(sec: dict[str, Any] | None, label: str) -> str:
    """Why a row has no ratio: the section or row is absent, or the row did not run."""
    if sec is None:
        return "section not run"
    for r in sec["rows"]:
        if r["label"] == label:
            return f"{label}: {r['status']} {r.get('reason') or ''}".strip()
    return f"no row {label!r}"


def _verdict(value: float | None, limit: float, what: str) -> tuple[str, str]:
    if value is None:
        return "not measured", what
    return ("met" if value <= limit else "NOT met"), f"{what}: {value:.2f}x (limit {limit}x)"


def targets(sections: list[dict[str, Any]], kinds: list[str]) -> list[dict[str, str]]:
    """Evaluate the issue-6 targets on the ResNet-50 sections present."""
    out: list[dict[str, str]] = []

    def add(target: str, verdict: str, detail: str) -> None:
        out.append({"target": target, "verdict": verdict, "detail": detail})

    for kind in kinds:
        sec = _find(sections, "torch", TARGET_SET, kind)
        for fam in ("AdamP", "SGDP"):
            label = f"ours {fam}()"
            r = _ok(sec, label)
            what = "ratio" if r else _why(sec, label)
            add(f"torch {fam} default <= 3.5x {BASELINE[fam]} ({kind})",
                *_verdict(r.get("ratio") if r else None, 3.5, what))  # fmt: skip
        _low_precision_targets(sections, kind, add)
        r = _ok(sec, "ours AdamP()")
        if sec is not None and r is not None:
            add(f"torch AdamP default faster than every other AdamP ({kind})",
                *_faster_than_peers(sec, "AdamP", r))  # fmt: skip
        else:
            add(f"torch AdamP default faster than every other AdamP ({kind})", "not measured",
                _why(sec, "ours AdamP()"))  # fmt: skip
        opt_in = [x for x in (sec or {}).get("rows", []) if x["role"] == "ours"
                  and x["family"] == "AdamP" and x.get("ratio") is not None
                  and ("compile" in x["label"] or "fused=True" in x["label"])]  # fmt: skip
        if opt_in:
            best = min(opt_in, key=lambda x: x["ratio"])
            v, d = _verdict(best["ratio"], 2.0, best["label"])
            add(f"torch AdamP opt-in compiled/fused path <= 2.0x ({kind})", v,
                d + f"; first step (compile) {best.get('first_step_s') or 0:.1f}s")  # fmt: skip
        else:
            add(f"torch AdamP opt-in compiled/fused path <= 2.0x ({kind})", "not measured",
                "no opt-in AdamP path of ours ran")  # fmt: skip
        for backend, limit in (("tensorflow", 1.25), ("torch", 1.5)):
            ks = _find(sections, f"keras/{backend}", "keras resnet50", kind)
            r = _ok(ks, "ours adamp_tf.AdamP")
            add(f"Keras AdamP on {backend} <= {limit}x keras AdamW ({kind})",
                *_verdict(r.get("ratio") if r else None, limit,
                          "ratio" if r else _why(ks, "ours adamp_tf.AdamP")))  # fmt: skip
    return out


def _low_precision_targets(sections: list[dict[str, Any]], kind: str, add: Any) -> None:
    """Issue 12: in bfloat16, ours <= 3.5x torch's fused optimizer and faster than peers."""
    sec = _find(sections, "torch", TARGET_SET, kind, dtype="bfloat16")
    if sec is None:
        return
    for fam in ("AdamP", "SGDP"):
        label = f"ours {fam}()"
        r = _ok(sec, label)
        add(f"torch {fam} default bf16 <= 3.5x {BASELINE[fam]} bf16 ({kind})",
            *_verdict(r.get("ratio") if r else None, 3.5,
                      "ratio" if r else _why(sec, label)))  # fmt: skip
        if r is not None:
            add(f"torch {fam} default bf16 faster than every peer ({kind})",
                *_faster_than_peers(sec, fam, r))  # fmt: skip


def _faster_than_peers(sec: dict[str, Any], fam: str, ours: dict[str, Any]) -> tuple[str, str]:
    """Verdict and detail: is ``ours`` faster than every peer of ``fam`` in ``sec``?"""
    peers = [x for x in sec["rows"] if x["family"] == fam and x["role"] == "peer"
             and x.get("median_ms") is not None]  # fmt: skip
    slower = [x["label"] for x in peers if x["median_ms"] <= ours["median_ms"]]
    detail = f"{ours['median_ms']:.1f} ms vs " + ", ".join(
        f"{x['label']} {x['median_ms']:.1f} ms" for x in peers)  # fmt: skip
    return ("met" if not slower else "NOT met"), detail


def _load_warning(info: dict[str, Any], sections: list[dict[str, Any]]) -> list[str]:
    """A caution when the 1-minute load exceeded the thread count during any section."""
    loads = [s["loadavg_start"][0] for s in sections if s.get("loadavg_start")]
    loads += [s["loadavg_end"][0] for s in sections if s.get("loadavg_end")]
    if not loads or max(loads) <= info["threads"]:
        return []
    return [
        f"**Caution:** the 1-minute load average reached {max(loads):.1f} on "
        f"{info['usable_cpus']} CPUs while these ran ({info['threads']} threads asked), so "
        "steps waited for CPU time: medians are inflated and spread widely (see IQR). The "
        "verdicts below are mechanical; rerun on an idle machine before relying on them.",
        "",
    ]


def render(info: dict[str, Any], sections: list[dict[str, Any]], verdicts: list[dict[str, str]],
           cuda_note: str) -> str:  # fmt: skip
    v = info["versions"]
    vers = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    lines = [
        "# Optimizer step benchmark",
        "",
        f"- Date (UTC): {info['date_utc']}; command: `{info['command']}`",
        f"- Machine: {info['cpu_model']}, {info['logical_cpus']} logical CPUs "
        f"({info['usable_cpus']} usable), {info['memory_gib']} GiB; {info['platform']}; "
        f"Python {info['python']}",
        f"- Threads: {info['threads']} (torch.set_num_threads; TF intra/inter-op; "
        "OMP_NUM_THREADS in Keras subprocesses)",
        f"- Load average (1/5/15 min): start {info['loadavg_start']}, end {info['loadavg_end']}"
        " (the machine may be shared: a load above the thread count means the timings include "
        "waiting for CPU)",
        f"- Versions: {vers}",
        f"- CUDA: {cuda_note}",
    ]
    for inc in info.get("included_runs", []):
        lines.append(
            f"- Sections merged from the run of {inc['date_utc']} (`{inc['command']}`, "
            f"load {inc['loadavg_start']} -> {inc['loadavg_end']})"
        )
    lines += [
        "",
        "Columns: *median ms* of one `step()` (wall clock), *IQR* its 25th-75th percentiles; "
        "*x baseline* = median / median of torch AdamW(fused=True) for the AdamP family and "
        "torch SGD(fused=True) for the SGDP family (Keras: keras AdamW / keras SGD), measured "
        "in the same process; *CPU ms* = process CPU time per step (all threads); "
        "*state B/param* = bytes of the tensors reachable from `optimizer.state` (weights and "
        "gradients excluded), per parameter (scratch the optimizer keeps elsewhere: the "
        "memory table under each section); "
        "*step peak +MB* = the largest growth of the process's peak RSS over its RSS just "
        "before a step (transient memory that touched new pages; memory the allocator "
        "already holds is not counted; on CUDA, max_memory_allocated growth); *1st step s* "
        "includes state allocation and, for compiled paths, compilation; *rel. diff vs "
        "authors* = max |w - w_authors| / max |w_authors| after the same steps from the same "
        "weights (AdamW/SGD rows: distance of the plain optimizer from AdamP/SGDP).",
        "",
        "## Targets (issues 6 and 12, ResNet-50 set)",
        "",
        *_load_warning(info, sections),
        "| target | verdict | measured |",
        "|---|---|---|",
    ]
    lines += [f"| {t['target']} | {t['verdict']} | {t['detail']} |" for t in verdicts]
    lines += ["", "## Results", ""]
    lines += [section_md(s) for s in sections]
    return "\n".join(lines)


def write(out_dir: Path, name: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / f"{name}.md", out_dir / f"{name}.json"
    md.write_text(markdown)
    js.write_text(json.dumps(payload, indent=1, default=str))
    return md, js
