"""Markdown for the results file: tables of medians and ratios, targets, the run's context."""

from __future__ import annotations

import math
from collections.abc import Iterable

from .measure import MB, Result, RowReport


def ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as ``"12×"`` / ``"1.8×"``; ``n/a`` when either is missing or ``b`` is 0."""
    if a is None or b is None or b == 0 or not math.isfinite(a) or not math.isfinite(b):
        return "n/a"
    r = a / b
    return f"{r:.0f}×" if r >= 10 else f"{r:.2g}×" if r < 1 else f"{r:.1f}×"


def compare(theirs: float | None, ours: float | None, better: str, worse: str) -> str:
    """``"2.4× faster"`` when ``theirs`` costs more than ``ours``, else ``"1.5× slower"``."""
    if not theirs or not ours:
        return f"n/a {better}"
    if theirs >= ours:
        return f"{ratio(theirs, ours)} {better}"
    return f"{ratio(ours, theirs)} {worse}"


def costs(theirs: Result, ours: Result, what: tuple[str, ...] = ("seconds", "bytes")) -> str:
    """How ``ours`` compares with ``theirs`` in words, e.g. ``"3.1× faster, 12× fewer bytes"``."""
    words = {"seconds": ("faster", "slower"), "bytes": ("fewer bytes", "more bytes"),
             "requests": ("fewer requests", "more requests"),
             "peak_bytes": ("less peak memory", "more peak memory")}
    return ", ".join(compare(theirs.median(a), ours.median(a), *words[a]) for a in what)


def _seconds(r: Result) -> str:
    m, s = r.median("seconds"), r.spread("seconds")
    if m is None or s is None:
        return "n/a"
    if len(r.samples) < 2:
        return f"{m:.3g}"
    return f"{m:.3g} ({s[0]:.3g}–{s[1]:.3g})"


def _mb(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / MB:.3g}" if value < 100 * MB else f"{value / MB:,.0f}"


def _count(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def results_table(results: Iterable[Result], ref_side: str, memory: bool = False,
                  ref_label: str | None = None) -> str:
    """One line per (case, side): medians over repetitions, (min–max) time, ratios to the
    ``ref_side`` of the same case (> 1: the other side costs more)."""
    results = list(results)
    refs = {r.case: r for r in results if r.side == ref_side}
    head = ["case", "side", "time s, median (min–max)", "MB on the wire", "requests"]
    if memory:
        head.append("peak memory MB")
    label = ref_label or ref_side
    head += [f"time ÷ {label}", f"bytes ÷ {label}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        ref = refs.get(r.case)
        cells = [r.case, r.side, _seconds(r), _mb(r.median("bytes")),
                 _count(r.median("requests"))]
        if memory:
            cells.append(_mb(r.median("peak_bytes")))
        if ref is None or ref is r:
            cells += ["1×" if ref is r else "", "1×" if ref is r else ""]
        else:
            cells += [ratio(r.median("seconds"), ref.median("seconds")),
                      ratio(r.median("bytes"), ref.median("bytes"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def failed_row(row: int, title: str, error: BaseException) -> RowReport:
    """A row that raised: its error, in the results file, in place of its tables."""
    rep = RowReport(row, title)
    rep.body.append(f"**Failed**: `{type(error).__name__}: {error}` (traceback in the run's "
                    "log); nothing of this row was measured.")
    rep.headlines.append((title, "**failed**, see its section"))
    return rep


def side_notes(results: Iterable[Result]) -> str:
    seen: dict[str, str] = {}
    for r in results:
        if r.note and r.side not in seen:
            seen[r.side] = r.note
    return "\n".join(f"- **{side}**: {note}" for side, note in seen.items())


def document(rows: list[RowReport], context: dict, caveats: list[str]) -> str:
    """The whole results file."""
    out = [f"# Benchmarks — `{context['preset']}` preset, {context['date']}", ""]
    out += [f"Command: `{context['command']}`", ""]
    out += ["## Headline", "", "| comparison | result |", "|---|---|"]
    for row in rows:
        for label, value in row.headlines:
            out.append(f"| {label} (row {row.row}) | {value} |")
    out += ["", "## Targets", "", "| issue | target | measured | met |", "|---|---|---|---|"]
    for row in rows:
        for t in row.targets:
            met = "n/a" if t.met is None else ("yes" if t.met else "**no**")
            out.append(f"| #{t.issue} | {t.text} (row {row.row}) | {t.measured} | {met} |")
    out += ["", "## Setup", ""]
    out += [f"- **{k}**: {v}" for k, v in context["setup"].items()]
    out += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in context["versions"].items()),
            ""]
    for row in rows:
        out += [f"## Row {row.row}: {row.title}", ""]
        for part in row.body:
            out += [part, ""]
        notes = side_notes(row.results)
        if notes:
            out += [notes, ""]
    if caveats:
        out += ["## Caveats", ""] + [f"- {c}" for c in caveats] + [""]
    return "\n".join(out)
