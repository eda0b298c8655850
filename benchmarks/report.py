"""Results out: the markdown table (printed and `results.md`), `results.json` and a bar chart."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

from benchmarks.runner import Measurement

HEADER = (
    "case",
    "subject",
    "req/s",
    "p50 ms",
    "p99 ms",
    "CPU µs/req",
    "of it, kernel",
    "errors",
    "Gbit/s",
)


def _ratio(m: Measurement, rows: Sequence[Measurement], baseline: str) -> str:
    base = next((r for r in rows if r.case == m.case and r.subject == baseline), None)
    if base is None or not base.rps or m.rps is None:
        return "n/a"
    return f"{m.rps / base.rps:.2f}"


def _gbits(m: Measurement) -> float | None:
    """Response bytes (heads and bodies) wrk read per second, in Gbit/s."""
    if not m.wrk or not m.wrk.get("duration_s"):
        return None
    return m.wrk["bytes"] * 8 / m.wrk["duration_s"] / 1e9


def _spread(m: Measurement) -> str:
    """With --rounds: the lowest and highest req/s of the rounds."""
    if not m.rounds_rps:
        return "—"
    return f"{min(m.rounds_rps):,.0f} to {max(m.rounds_rps):,.0f}"


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def ordered(rows: Sequence[Measurement]) -> list[Measurement]:
    """Rows grouped by case (in run order), subjects in run order within a case."""
    cases = {c: i for i, c in enumerate(dict.fromkeys(m.case for m in rows))}
    subjects = {s: i for i, s in enumerate(dict.fromkeys(m.subject for m in rows))}
    return sorted(rows, key=lambda m: (cases[m.case], subjects[m.subject]))


def table(rows: Sequence[Measurement], baseline: str = "haproxy") -> str:
    spread = any(m.rounds_rps for m in rows)  # --rounds: a column for the rounds' range
    header = (*HEADER, f"req/s vs {baseline}", *(("rounds: req/s",) if spread else ()))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in ordered(rows):
        if m.error is not None:
            cells = [m.case_title, m.subject, "error", "—", "—", "—", "—", "—", "—", "n/a"]
        else:
            cells = [
                m.case_title,
                m.subject + (f" ({m.note})" if m.note else ""),
                _num(m.rps, ",.0f"),
                _num(m.p50_ms, ".2f"),
                _num(m.p99_ms, ".2f"),
                _num(m.cpu_us_per_req, ".1f"),
                _num(m.kernel_us_per_req, ".1f"),
                _num(m.errors, "d"),
                _num(_gbits(m), ".2f"),
                _ratio(m, rows, baseline),
            ]
        if spread:
            cells.append(_spread(m))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# `lb run --workers N` subjects, by N: the scaling table compares them case by case.
WORKER_SUBJECTS = {"lb": 1, "lb-w2": 2}


def scaling_table(rows: Sequence[Measurement]) -> str:
    """lb with 1 and 2 workers side by side, per case: req/s, CPU, and req/s against 1 worker.
    Empty unless both ran."""
    ok = [m for m in ordered(rows) if m.subject in WORKER_SUBJECTS and m.error is None]
    if len({m.subject for m in ok}) < 2:
        return ""
    lines = [
        "| case | workers | req/s | p99 ms | CPU µs/req | req/s vs 1 worker |",
        "|---|---|---|---|---|---|",
    ]
    for m in ok:
        one = next((r for r in ok if r.case == m.case and r.subject == "lb"), None)
        ratio = f"{m.rps / one.rps:.2f}" if one is not None and one.rps and m.rps else "n/a"
        lines.append(
            f"| {m.case_title} | {WORKER_SUBJECTS[m.subject]}"
            + (f" ({m.note})" if m.note else "")
            + f" | {_num(m.rps, ',.0f')} | {_num(m.p99_ms, '.2f')} | "
            f"{_num(m.cpu_us_per_req, '.1f')} | {ratio} |"
        )
    return "\n".join(lines)


def errors_section(rows: Sequence[Measurement]) -> str:
    # One line per (subject, error): a subject that failed to start fails every case alike.
    grouped: dict[tuple[str, str], list[str]] = {}
    for m in rows:
        if m.error is not None:
            grouped.setdefault((m.subject, m.error), []).append(m.case_title)
    if not grouped:
        return ""
    lines = ["", "Errors:", ""]
    for (subject, error), cases in grouped.items():
        lines.append(f"- {subject} ({', '.join(cases)}): {error}")
    return "\n".join(lines)


def markdown(rows: Sequence[Measurement], meta: dict[str, object], baseline: str) -> str:
    lines = [f"# lb benchmark, {meta['started']}", ""]
    for key in ("host", "pinning", "origin", "lb_build", "load", "command"):
        if key in meta:
            lines.append(f"- {key}: {meta[key]}")
    lines += ["", table(rows, baseline), errors_section(rows), ""]
    scaling = scaling_table(rows)
    if scaling:
        lines += ["## lb run --workers N", "", scaling, ""]
    lines.append(
        "CPU µs/req: user+system CPU time of the subject's processes (for `direct`, the origin's) "
        "during the measured run, divided by requests completed."
    )
    return "\n".join(lines) + "\n"


def write(out: Path, rows: Sequence[Measurement], meta: dict[str, object], baseline: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown(rows, meta, baseline))
    document = {"meta": meta, "baseline": baseline, "results": [m.to_json() for m in rows]}
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def chart(out: Path, rows: Sequence[Measurement]) -> Path | None:
    """A grouped bar chart (req/s and CPU µs/req per case, one bar per subject); None if no
    matplotlib (the optional `bench` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ok = [m for m in rows if m.error is None and m.rps is not None]
    if not ok:
        return None
    cases = list(dict.fromkeys(m.case_title for m in ok))
    subjects = list(dict.fromkeys(m.subject for m in ok))
    width = 0.8 / len(subjects)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    panels = (
        ("req/s (higher is better)", "rps"),
        ("CPU µs/req (lower is better)", "cpu_us_per_req"),
    )
    for ax, (title, attr) in zip(axes, panels, strict=True):
        for i, subject in enumerate(subjects):
            values = []
            for case in cases:
                m = next((r for r in ok if r.subject == subject and r.case_title == case), None)
                value = getattr(m, attr) if m is not None else None
                values.append(value if value is not None else 0.0)
            xs = [c + (i - (len(subjects) - 1) / 2) * width for c in range(len(cases))]
            ax.bar(xs, values, width, label=subject)
        ax.set_xticks(range(len(cases)), cases)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    path = out / "results.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
