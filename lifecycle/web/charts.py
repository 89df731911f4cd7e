"""Charts as inline SVG, drawn on the server: no script, readable by screen readers.

:func:`line_chart` draws one line per series over days.  The picture is
``role="img"`` with a title; every page that shows one also shows the same
figures in a table, which is what assistive technology reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from markupsafe import Markup, escape

#: Line colours, told apart by people with the common colour-vision deficiencies.
COLOURS = ("#1b6ac9", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#a6761d",
           "#666666")
WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 200, 12, 28
#: Past the colours, lines are dashed: two series never look alike.
DASHES = ("", "6 3", "2 3")


#: Grid intervals on the y axis (five labels: 0 and four steps up).
TICKS = 4


def _nice_step(value: float) -> int:
    """The smallest whole 1, 2 or 5 × 10ⁿ step whose :data:`TICKS` steps reach ``value``:
    the axis counts things, so every label is a whole number (0, 1, 2, 3, 4 for a top of 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor * TICKS >= value:
                return step * factor
        step *= 10


def line_chart(title: str, days: Sequence[date],
               series: Sequence[tuple[str, Sequence[float]]]) -> Markup:
    """An SVG line chart of ``series`` (name, one value per day) over ``days``."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = _nice_step(max((v for _, values in series for v in values), default=0))
    top = step * TICKS
    n = max(len(days) - 1, 1)

    def x(i: int) -> float:
        return LEFT + plot_w * i / n

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'width="100%" role="img" aria-label="{escape(title)}" class="chart">'
             f'<title>{escape(title)}</title>']
    for k in range(TICKS + 1):  # grid lines and y labels, whole numbers
        v = step * k
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                     f'stroke="#d9dee3"/><text x="{LEFT - 6}" y="{y(v) + 4:.1f}" '
                     f'text-anchor="end" font-size="11">{_short(v)}</text>')
    if days:
        for i in sorted({0, len(days) // 2, len(days) - 1}):
            parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" text-anchor="middle" '
                         f'font-size="11">{days[i].isoformat()}</text>')
    for index, (name, values) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        dash = DASHES[index // len(COLOURS) % len(DASHES)]
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        if len(values) == 1:
            parts.append(f'<circle cx="{x(0):.1f}" cy="{y(values[0]):.1f}" r="3" '
                         f'fill="{colour}"/>')
        elif values:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dashed} '
                         f'points="{points}"/>')
        ly = TOP + 12 + 15 * index
        parts.append(f'<line x1="{LEFT + plot_w + 10}" x2="{LEFT + plot_w + 30}" y1="{ly - 4}" '
                     f'y2="{ly - 4}" stroke="{colour}" stroke-width="3"{dashed}/>'
                     f'<text x="{LEFT + plot_w + 36}" y="{ly}" font-size="12">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _short(value: int) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return str(value)


#: Cell size and margins of :func:`heat_map` (SVG units).
CELL_W, CELL_H, HEAT_LEFT, HEAT_TOP = 52, 26, 72, 34


def heat_map(title: str, rows: Sequence[str], columns: Sequence[str],
             values: Sequence[Sequence[float | None]], labels: Sequence[Sequence[str]]) -> Markup:
    """An SVG heat map: one row per ``rows`` label, one column per ``columns`` label; a cell
    of ``values`` (0–1) is shaded from white to deep blue and carries its ``labels`` text;
    None is a cell that does not exist yet (left blank)."""
    width = HEAT_LEFT + CELL_W * max(len(columns), 1) + 8
    height = HEAT_TOP + CELL_H * max(len(rows), 1) + 8
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" role="img" aria-label="{escape(title)}" class="chart heat">'
             f'<title>{escape(title)}</title>']
    for j, column in enumerate(columns):
        parts.append(f'<text x="{HEAT_LEFT + CELL_W * j + CELL_W / 2:.1f}" y="{HEAT_TOP - 10}" '
                     f'text-anchor="middle" font-size="11">{escape(column)}</text>')
    for i, row in enumerate(rows):
        y = HEAT_TOP + CELL_H * i
        parts.append(f'<text x="{HEAT_LEFT - 6}" y="{y + CELL_H / 2 + 4:.1f}" text-anchor="end" '
                     f'font-size="11">{escape(row)}</text>')
        for j, value in enumerate(values[i]):
            if value is None:
                continue
            x = HEAT_LEFT + CELL_W * j
            level = max(0.0, min(1.0, float(value)))
            # white to #1b4f9c; the text turns white on the darker half
            shade = (round(255 - (255 - 27) * level), round(255 - (255 - 79) * level),
                     round(255 - (255 - 156) * level))
            ink = "#ffffff" if level > 0.5 else "#1f2933"
            parts.append(f'<rect x="{x}" y="{y}" width="{CELL_W - 2}" height="{CELL_H - 2}" '
                         f'fill="rgb{shade}" stroke="#cbd2d9"/>'
                         f'<text x="{x + (CELL_W - 2) / 2:.1f}" y="{y + CELL_H / 2 + 3:.1f}" '
                         f'text-anchor="middle" font-size="11" fill="{ink}">'
                         f'{escape(labels[i][j])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
