"""The stages of boot-test runs on one time axis, as an SVG picture (the way `systemd-analyze plot` draws units).

Pure: boot-test JSON reports (``{"machine", "via", "ok", "stages": [{"name", "t", "ok"}], "seconds", ...}``)
in, SVG text out. One row per run, one bar per stage: a stage's bar runs from the time the previous stage was
reached (0 for the first, QEMU's start) to the time it was reached. A run that failed gets a hatched red bar
from its last reached stage to its end, named after the first stage it did not reach. Same reports, same bytes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

# Geometry, in px.
LABEL_WIDTH = 220  # run labels, left of the axis: at least this, wider for long labels up to MAX_LABEL_WIDTH
MAX_LABEL_WIDTH = 420
LABEL_CHAR_WIDTH = 6.8  # of an 11 px run label
PLOT_WIDTH = 960  # the time axis
RIGHT_MARGIN = 40
TOP = 40  # title
ROW_HEIGHT = 44
BAR_TOP = 6  # within a row
BAR_HEIGHT = 18
AXIS_HEIGHT = 30
LEGEND_ROW = 20
FONT = "DejaVu Sans, Verdana, sans-serif"
CHAR_WIDTH = 6.2  # of an 11 px label, to decide whether a stage name fits under its bar

# boot-test's stages in boot order, each with its colour; other stage names get a colour from their CRC.
STAGE_COLOURS: dict[str, str] = {
    "firmware": "#7f7f7f",
    "pxelinux": "#9467bd",
    "kernel": "#1f77b4",
    "initrd": "#17becf",
    "aoe-discovered": "#ff7f0e",
    "root-mounted": "#2ca02c",
    "init": "#bcbd22",
}
EXTRA_COLOURS = ("#8c564b", "#e377c2", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd")
FAILED_COLOUR = "#d62728"


@dataclass(frozen=True)
class Bar:
    stage: str
    start: float
    end: float
    reached: bool  # False: the hatched bar of a stage that was never reached


@dataclass(frozen=True)
class Row:
    label: str
    ok: bool
    bars: tuple[Bar, ...]
    note: str  # shown after the label: "ok 34.2 s" or what failed


def stage_colour(name: str) -> str:
    if name in STAGE_COLOURS:
        return STAGE_COLOURS[name]
    return EXTRA_COLOURS[zlib.crc32(name.encode()) % len(EXTRA_COLOURS)]


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: expected a time in seconds (a number >= 0), got {value!r}")
    return float(value)


def report_row(report: Mapping[str, Any], label: str) -> Row:
    """The bars of one boot-test report; raises ValueError naming the field when the report is malformed.

    A machine of a fleet report (boot-test --all) starts its bars at its `started` (s after the fleet's first
    guest started: a guest may wait for a free job)."""
    offset = _number(report.get("started", 0) or 0, f"{label}: started")
    stages = report.get("stages")
    if not isinstance(stages, list):
        raise ValueError(f"{label}: 'stages' must be a list of {{name, t, ok}}, got {stages!r}")
    bars: list[Bar] = []
    last = 0.0
    missing: str | None = None
    for i, stage in enumerate(stages):
        if not isinstance(stage, Mapping) or not isinstance(stage.get("name"), str):
            raise ValueError(f"{label}: stages[{i}] must be an object with a string 'name', got {stage!r}")
        name = stage["name"]
        if not stage.get("ok") or stage.get("t") is None:
            missing = missing or name
            continue
        t = _number(stage["t"], f"{label}: stages[{i}].t ({name})")
        bars.append(Bar(name, offset + min(last, t), offset + t, True))
        last = max(last, t)
    end = _number(report.get("seconds", last) or last, f"{label}: seconds")
    ok = bool(report.get("ok")) and missing is None
    if missing is not None:
        bars.append(Bar(missing, offset + last, offset + max(end, last), False))
        note = f"FAILED: {missing} not reached"
    elif not ok:
        note = "FAILED: " + str(report.get("failure") or "the guest's write is missing")
    else:
        note = f"ok, {last:.1f} s"
    return Row(label, ok, tuple(bars), note)


def report_label(report: Mapping[str, Any], name: str = "") -> str:
    """`machine (via)`, or `name` when given (e.g. the file the report came from)."""
    if name:
        return name
    machine = report.get("machine") or "?"
    via = report.get("via")
    return f"{machine} ({via})" if via else str(machine)


def nice_step(span: float, ticks: int = 10) -> float:
    """A tick interval of 1, 2 or 5 times a power of ten giving at most about `ticks` ticks over `span`."""
    raw = max(span, 1e-9) / ticks
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return float(m * power)
    return float(10 * power)  # pragma: no cover


@dataclass(frozen=True)
class Axis:
    seconds: float  # the right end of the axis, a multiple of `step`
    step: float
    left: int = LABEL_WIDTH  # x of t=0

    @property
    def scale(self) -> float:
        return PLOT_WIDTH / self.seconds

    def x(self, t: float) -> float:
        return round(self.left + t * self.scale, 2)


def axis_for(rows: Sequence[Row]) -> Axis:
    end = max((b.end for r in rows for b in r.bars), default=0.0)
    step = nice_step(end or 1.0)
    longest = max((len(r.label) for r in rows), default=0)
    left = min(MAX_LABEL_WIDTH, max(LABEL_WIDTH, math.ceil(longest * LABEL_CHAR_WIDTH) + 20))
    return Axis(max(step, math.ceil(end / step - 1e-9) * step), step, left)


def _fit(label: str, width: int) -> str:
    """`label`, cut with an ellipsis to fit `width` px."""
    room = int((width - 20) / LABEL_CHAR_WIDTH)
    return label if len(label) <= room else label[: max(room - 1, 1)] + "\u2026"


def _fmt(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


def _seconds(v: float, step: float) -> str:
    digits = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{v:.{digits}f} s"


def render_svg(rows: Sequence[Row], title: str = "netbootgen boot-test timeline") -> str:
    """The SVG picture of `rows` (one per run)."""
    if not rows:
        raise ValueError("no runs to draw")
    axis = axis_for(rows)
    stages = list(dict.fromkeys(b.stage for r in rows for b in r.bars))
    plot_top = TOP
    plot_bottom = plot_top + len(rows) * ROW_HEIGHT
    legend_top = plot_bottom + AXIS_HEIGHT + 10
    width = axis.left + PLOT_WIDTH + RIGHT_MARGIN
    height = legend_top + LEGEND_ROW * math.ceil((len(stages) + 1) / 6) + 10
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="{FONT}" font-size="11">',
        f"<title>{escape(title)}</title>",
        "<defs>",
        f'<pattern id="failed" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        f'<rect width="6" height="6" fill="#ffffff"/><rect width="3" height="6" fill="{FAILED_COLOUR}"/></pattern>',
        "</defs>",
        f'<rect class="background" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="22" font-size="14" font-weight="bold">{escape(title)}</text>',
        '<g class="grid" stroke="#dddddd" stroke-width="1" shape-rendering="crispEdges">',
    ]
    ticks = [i * axis.step for i in range(round(axis.seconds / axis.step) + 1)]
    for t in ticks:
        out.append(f'<line x1="{_fmt(axis.x(t))}" y1="{plot_top}" x2="{_fmt(axis.x(t))}" y2="{plot_bottom}"/>')
    out.append("</g>")
    for i, row in enumerate(rows):
        y = plot_top + i * ROW_HEIGHT
        colour = "#000000" if row.ok else FAILED_COLOUR
        out.append(f'<g class="run" data-label={quoteattr(row.label)} data-ok="{str(row.ok).lower()}">')
        out.append(f'<text x="10" y="{y + BAR_TOP + 13}"><title>{escape(row.label)}</title>'
                   f'{escape(_fit(row.label, axis.left))}</text>')
        out.append(f'<text x="10" y="{y + BAR_TOP + 28}" font-size="10" fill="{colour}">{escape(row.note)}</text>')
        for bar in row.bars:
            x0, x1 = axis.x(bar.start), axis.x(bar.end)
            fill = stage_colour(bar.stage) if bar.reached else "url(#failed)"
            what = f"{bar.stage}: {_fmt(bar.start)}-{_fmt(bar.end)} s" if bar.reached else (
                f"{bar.stage} not reached ({_fmt(bar.start)}-{_fmt(bar.end)} s)")
            out.append(
                f'<rect class="stage" data-stage={quoteattr(bar.stage)} data-start="{_fmt(bar.start)}" '
                f'data-end="{_fmt(bar.end)}" x="{_fmt(x0)}" y="{y + BAR_TOP}" width="{_fmt(max(x1 - x0, 0))}" '
                f'height="{BAR_HEIGHT}" fill="{fill}" shape-rendering="crispEdges"><title>{escape(what)}</title></rect>'
            )
            name = bar.stage if bar.reached else f"{bar.stage}?"
            if x1 - x0 >= len(name) * CHAR_WIDTH + 4:
                out.append(f'<text x="{_fmt(x0 + 2)}" y="{y + BAR_TOP + BAR_HEIGHT + 12}" font-size="10" '
                           f'fill="#333333">{escape(name)}</text>')
        out.append("</g>")
    out.append(f'<g class="axis" stroke="#000000" shape-rendering="crispEdges">'
               f'<line x1="{axis.left}" y1="{plot_bottom}" x2="{axis.left + PLOT_WIDTH}" y2="{plot_bottom}"/>')
    for t in ticks:
        x = _fmt(axis.x(t))
        out.append(f'<line x1="{x}" y1="{plot_bottom}" x2="{x}" y2="{plot_bottom + 5}"/>')
    out.append("</g>")
    out.append('<g class="ticks" text-anchor="middle">')
    for t in ticks:
        out.append(f'<text x="{_fmt(axis.x(t))}" y="{plot_bottom + 18}">{_seconds(t, axis.step)}</text>')
    out.append("</g>")
    out.append('<g class="legend">')
    for j, name in enumerate([*stages, "not reached"]):
        lx = 10 + (j % 6) * 190
        ly = legend_top + (j // 6) * LEGEND_ROW
        fill = "url(#failed)" if name == "not reached" else stage_colour(name)
        out.append(f'<rect x="{lx}" y="{ly}" width="14" height="12" fill="{fill}"/>'
                   f'<text x="{lx + 20}" y="{ly + 10}">{escape(name)}</text>')
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def timeline_svg(reports: Sequence[tuple[str, Mapping[str, Any]]], title: str = "netbootgen boot-test timeline") -> str:
    """SVG of (label, report) pairs; an empty label means `machine (via)` of the report."""
    return render_svg([report_row(r, report_label(r, label)) for label, r in reports], title)
