"""`netbootgen timeline`: boot-test reports -> SVG; the structure, and the picture as a real browser draws it.

The browser test renders the SVG with headless Chromium (Debian's `chromium`), decodes the screenshot (a small
PNG reader below: zlib + the five scanline filters) and finds each stage's bar by its colour: the bar edges must
sit where the reports' `t` values put them on one common axis.
"""

from __future__ import annotations

import json
import os
import struct
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

from netbootgen.emulate import timeline as tl
from netbootgen.run import find_binary, run

SVG = "{http://www.w3.org/2000/svg}"

OK_RUN = {
    "ok": True, "machine": "node1", "via": "pxe", "seconds": 24.1,
    "stages": [
        {"name": "firmware", "t": 0.8, "ok": True}, {"name": "pxelinux", "t": 3.1, "ok": True},
        {"name": "kernel", "t": 6.4, "ok": True}, {"name": "initrd", "t": 14.2, "ok": True},
        {"name": "aoe-discovered", "t": 17.9, "ok": True}, {"name": "root-mounted", "t": 21.5, "ok": True},
        {"name": "init", "t": 23.0, "ok": True},
    ],
}  # fmt: skip
FAILED_RUN = {
    "ok": False, "machine": "node2", "via": "direct", "seconds": 31.7, "failure": "stage aoe-discovered ...",
    "stages": [
        {"name": "firmware", "t": 0.5, "ok": True}, {"name": "kernel", "t": 2.0, "ok": True},
        {"name": "initrd", "t": 9.2, "ok": True}, {"name": "aoe-discovered", "t": None, "ok": False},
        {"name": "root-mounted", "t": None, "ok": False}, {"name": "init", "t": None, "ok": False},
    ],
}  # fmt: skip


def stage_rects(svg: str) -> list[list[ET.Element]]:
    root = ET.fromstring(svg)
    return [list(g.iter(f"{SVG}rect")) for g in root.iter(f"{SVG}g") if g.get("class") == "run"]


def test_one_bar_per_stage_from_the_previous_stage_to_its_time() -> None:
    svg = tl.timeline_svg([("", OK_RUN)])
    [rects] = stage_rects(svg)
    assert [r.get("data-stage") for r in rects] == [s["name"] for s in OK_RUN["stages"]]
    starts = [0.0] + [s["t"] for s in OK_RUN["stages"]][:-1]
    for rect, start, stage in zip(rects, starts, OK_RUN["stages"], strict=True):
        assert float(rect.get("data-start", "")) == start
        assert float(rect.get("data-end", "")) == stage["t"]
        assert rect.get("fill") == tl.STAGE_COLOURS[stage["name"]]
    # x positions are linear in t: the same px per second for every bar
    axis = tl.axis_for([tl.report_row(OK_RUN, "x")])
    for rect in rects:
        x, w = float(rect.get("x", "")), float(rect.get("width", ""))
        assert x == pytest.approx(axis.left + float(rect.get("data-start", "")) * axis.scale, abs=0.01)
        assert x + w == pytest.approx(axis.left + float(rect.get("data-end", "")) * axis.scale, abs=0.02)
    assert axis.seconds == 25 and axis.step == 5  # 24.1 s: at most ~10 ticks of 1, 2 or 5 x 10^n s, up to 25 s


def test_failed_run_ends_in_a_bar_named_after_the_missing_stage() -> None:
    svg = tl.timeline_svg([("", OK_RUN), ("", FAILED_RUN)])
    ok_rects, failed_rects = stage_rects(svg)
    assert len(ok_rects) == 7
    last = failed_rects[-1]
    assert [r.get("data-stage") for r in failed_rects] == ["firmware", "kernel", "initrd", "aoe-discovered"]
    assert (last.get("fill"), last.get("data-start"), last.get("data-end")) == ("url(#failed)", "9.2", "31.7")
    assert "FAILED: aoe-discovered not reached" in svg
    runs = [g for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("class") == "run"]
    assert [(g.get("data-label"), g.get("data-ok")) for g in runs] == [
        ("node1 (pxe)", "true"), ("node2 (direct)", "false")]
    # the common axis reaches past the end of the longest run
    ticks = [t.text for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("class") == "ticks" for t in g]
    assert ticks[0] == "0 s" and ticks[-1] == "35 s"


def test_deterministic_and_escaped() -> None:
    odd = dict(OK_RUN, machine='a<b>&"c"')
    assert tl.timeline_svg([("", odd)]) == tl.timeline_svg([("", json.loads(json.dumps(odd)))])
    svg = tl.timeline_svg([("", odd)])
    ET.fromstring(svg)  # well-formed
    assert "a&lt;b&gt;&amp;" in svg


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ({"stages": "x"}, "'stages' must be a list"),
        ({"stages": [{"t": 1}]}, "stages[0] must be an object with a string 'name'"),
        ({"stages": [{"name": "kernel", "t": -1, "ok": True}]}, "stages[0].t (kernel)"),
        ({"stages": [{"name": "kernel", "t": True, "ok": True}]}, "got True"),
    ],
)
def test_malformed_reports_name_the_field(report: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^r1: .*" + message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        tl.report_row(report, "r1")


def test_long_labels_widen_the_label_column_then_are_cut() -> None:
    short = tl.axis_for([tl.report_row(OK_RUN, "node1")])
    longer = tl.axis_for([tl.report_row(OK_RUN, "x" * 40)])
    assert short.left == tl.LABEL_WIDTH and tl.LABEL_WIDTH < longer.left < tl.MAX_LABEL_WIDTH
    svg = tl.timeline_svg([("y" * 100, OK_RUN)])
    [label] = [t for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("class") == "run"
               for t in g.iter(f"{SVG}text") if t.find(f"{SVG}title") is not None]
    title = label.find(f"{SVG}title")
    assert title is not None and title.text == "y" * 100  # the whole label on hover
    shown = "".join(label.itertext())[100:]
    assert shown.endswith("\u2026") and len(shown) * tl.LABEL_CHAR_WIDTH <= tl.MAX_LABEL_WIDTH - 20


def test_nice_steps() -> None:
    assert [tl.nice_step(s) for s in (0.5, 9, 23, 40.3, 180, 1000)] == [0.05, 1, 5, 5, 20, 100]


def test_cli_timeline(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    a, b, bad = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "bad.json"
    a.write_text(json.dumps(OK_RUN))
    b.write_text(json.dumps(OK_RUN))
    bad.write_text(json.dumps({"stages": [{"name": "kernel", "t": "soon", "ok": True}]}))
    out = tmp_path / "t.svg"
    result = cli("timeline", os.fspath(a), os.fspath(b), "-o", os.fspath(out))
    assert result.exit_code == 0, result.output
    labels = [g.get("data-label") for g in ET.fromstring(out.read_text()).iter(f"{SVG}g") if g.get("class") == "run"]
    assert labels == [os.fspath(a), os.fspath(b)]  # the same machine twice: labelled by file
    result = cli("timeline", os.fspath(bad), "-o", os.fspath(out))
    assert result.exit_code == 2
    assert f"{bad}: stages[0].t (kernel)" in result.output and "'soon'" in result.output


# -- the picture in a real browser ---------------------------------------------------------------------


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit RGB or RGBA, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        prev = line
        rows.append(bytes(v for i, v in enumerate(line) if i % channels < 3))
    return width, height, rows


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def segments(row: bytes, colours: dict[tuple[int, int, int], str]) -> list[tuple[str, int, int]]:
    """(stage, first x, last x) of each run of pixels of one stage colour (within 3 per channel)."""
    found: list[tuple[str, int, int]] = []
    for x in range(len(row) // 3):
        px = row[3 * x : 3 * x + 3]
        name = next((n for c, n in colours.items() if all(abs(p - q) <= 3 for p, q in zip(px, c, strict=True))),
                    None)
        if name is None:
            continue
        if found and found[-1][0] == name and found[-1][2] == x - 1:
            found[-1] = (name, found[-1][1], x)
        else:
            found.append((name, x, x))
    return found


def test_chromium_draws_the_stages_where_the_reports_say(tmp_path: Path) -> None:
    chromium = find_binary("chromium", "chromium-browser")
    if chromium is None:
        pytest.skip("chromium not found (Debian package chromium)")
    svg_path, png = tmp_path / "timeline.svg", tmp_path / "timeline.png"
    svg = tl.timeline_svg([("", OK_RUN), ("", FAILED_RUN)])
    svg_path.write_text(svg)
    root = ET.fromstring(svg)
    width, height = int(root.get("width", "")), int(root.get("height", ""))
    run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1",
         "--force-color-profile=srgb", f"--screenshot={png}", f"--window-size={width},{height}",
         svg_path.resolve().as_uri()], capture=True, env={"HOME": os.fspath(tmp_path)}, timeout=120)
    w, h, rows = read_png(png)
    assert (w, h) == (width, height)
    colours = {rgb(c): n for n, c in tl.STAGE_COLOURS.items()}
    colours[rgb(tl.FAILED_COLOUR)] = "failed"
    mid = tl.BAR_TOP + tl.BAR_HEIGHT // 2

    ok_row = rows[tl.TOP + mid]
    ok_segs = segments(ok_row, colours)
    assert [s[0] for s in ok_segs] == [s["name"] for s in OK_RUN["stages"]], ok_segs
    # the axis, from the pixels alone: where t=0 and the last stage's t are drawn
    x0, x_end = ok_segs[0][1], ok_segs[-1][2] + 1
    px_per_s = (x_end - x0) / OK_RUN["stages"][-1]["t"]
    for (name, first, last), stage in zip(ok_segs, OK_RUN["stages"], strict=True):
        assert last + 1 == pytest.approx(x0 + stage["t"] * px_per_s, abs=1.5), (name, first, last)

    failed_segs = segments(rows[tl.TOP + tl.ROW_HEIGHT + mid], colours)
    names = [s[0] for s in failed_segs]
    assert names[:3] == ["firmware", "kernel", "initrd"] and set(names[3:]) == {"failed"}, failed_segs
    assert failed_segs[0][1] == x0  # both runs start at the same x: one time axis
    for (name, _, last), stage in zip(failed_segs[:3], FAILED_RUN["stages"], strict=False):
        assert last + 1 == pytest.approx(x0 + stage["t"] * px_per_s, abs=1.5), name
    # the hatched bar runs from the last reached stage to the end of the run
    assert failed_segs[3][1] == pytest.approx(x0 + 9.2 * px_per_s, abs=3)
    # (its last red stripe: within one period of the 45° hatch, 6 * sqrt(2) px, of the end)
    assert failed_segs[-1][2] + 1 == pytest.approx(x0 + FAILED_RUN["seconds"] * px_per_s, abs=9)
