"""Small self-contained SVG charts (no scripts, no fonts, no network); every label is escaped.

Each chart is one ``<svg class="chart" data-chart=ID>`` element with a title, axes with ticks and units,
and a legend, so it reads the same in a browser, a screenshot or a printout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

# Tableau 10: distinct hues that stay apart for the common colour-vision deficiencies.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
GREY, INK, MUTED, GRID = "#9ca3af", "#1f2937", "#6b7280", "#e5e7eb"
SHAPES = ("circle", "diamond", "square", "triangle")
_CHAR = 6.6  # average width of a 12 px sans-serif character, for layout


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def number(v: float) -> str:
    """A short human form of a tick or bar value: 0.0123, 1.5, 250, 1200, 12k, 3.4M."""
    a = abs(v)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= scale * 10:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.0f}" if a >= 100 else f"{v:.3g}"


def scale_for(values: list[float], unit: str) -> tuple[float, str]:
    """(divisor, unit name) so the largest value reads between 1 and 1000, e.g. (1e3, "thousand MACs")."""
    top = max([abs(v) for v in values] + [0.0])
    for scale, prefix in ((1e9, "billion "), (1e6, "million "), (1e3, "thousand ")):
        if top >= scale:
            return scale, prefix + unit
    return 1.0, unit


@dataclass
class Axis:
    """A linear or log10 mapping of [lo, hi] onto pixels [start, end] (end may be < start for y)."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    def __call__(self, v: float) -> float:
        f = self._t(v) - self._t(self.lo)
        return self.start + f / ((self._t(self.hi) - self._t(self.lo)) or 1.0) * (self.end - self.start)

    def _t(self, v: float) -> float:
        return math.log10(max(v, 1e-30)) if self.log else v

    def ticks(self, count: int = 5) -> list[float]:
        if self.log:
            out = [(m, m * 10.0**e) for e in range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1)
                   for m in (1, 2, 5)]
            inside = [(m, t) for m, t in out if self.lo <= t * (1 + 1e-9) and t <= self.hi * (1 + 1e-9)]
            return [round(t, 12) for m, t in inside if len(inside) <= 8 or m == 1]
        step = _nice((self.hi - self.lo) / count)
        first = math.ceil(self.lo / step - 1e-9)
        return [round(k * step, 12) for k in range(first, math.floor(self.hi / step + 1e-9) + 1)]


def tick_format(ticks: list[float]):
    """A formatter that shows ``ticks`` with just enough decimals to tell them apart (10.85 vs 10.9)."""
    decimals = next((d for d in range(7) if len({f"{t:.{d}f}" for t in ticks}) == len(ticks)), 6)
    return lambda t: number(t) if abs(t) >= 1e4 or t == 0 else f"{t:.{decimals}f}"


def span(values: list[float], log: bool = False, zero: bool = False, pad: float = 0.08) -> tuple[float, float]:
    """A padded [lo, hi] covering ``values`` (from 0 when ``zero``), snapped outward to nice ticks for linear axes."""
    lo, hi = min(values), max(values)
    if log:
        return lo / 10 ** (pad * 3), hi * 10 ** (pad * 3)
    if zero:
        lo = min(lo, 0.0)
    width = hi - lo or abs(hi) * 0.1 or 1.0
    lo, hi = (lo if zero and lo == 0 else lo - width * pad), hi + width * pad
    step = _nice((hi - lo) / 5)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step


def _nice(raw: float) -> float:
    power = 10.0 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(m * power for m in (1, 2, 2.5, 5, 10) if raw <= m * power * (1 + 1e-9))


def _open(chart_id: str, width: float, height: float, title: str, subtitle: str = "") -> list[str]:
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{escape(chart_id)}" width="{width:.0f}" '
             f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{escape(title)}">'
             f"<style>text{{font:12px system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;fill:{INK}}}"
             f".v{{fill:{MUTED};font-size:11px}}.t{{font-weight:600;font-size:14px}}.s{{fill:{MUTED};font-size:12px}}"
             ".b{font-weight:600}</style>",
             f'<rect width="100%" height="100%" fill="#fff"/><text x="12" y="22" class="t">{escape(title)}</text>']
    if subtitle:
        parts.append(f'<text x="12" y="40" class="s">{escape(subtitle)}</text>')
    return parts


def _marker(shape: str, x: float, y: float, r: float, fill: str, extra: str = "", tooltip: str = "") -> str:
    """A circle, diamond, square or triangle centred on (x, y), with an optional hover tooltip."""
    if shape == "circle":
        tag, geometry = "circle", f'cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}"'
    elif shape == "square":
        tag, geometry = "rect", f'x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}"'
    else:
        d = r * (1.3 if shape == "diamond" else 1.25)
        corners = ((0, -d), (d, 0), (0, d), (-d, 0)) if shape == "diamond" else ((0, -d), (d, d * 0.8), (-d, d * 0.8))
        tag, geometry = "path", 'd="M' + "L".join(f"{x + dx:.1f} {y + dy:.1f}" for dx, dy in corners) + 'Z"'
    inner = f"<title>{escape(tooltip)}</title>" if tooltip else ""
    return f'<{tag} {geometry} fill="{fill}" {extra}>{inner}</{tag}>'


def _x_axis(ax: Axis, y_top: float, y_bottom: float, label: str, fmt=None) -> list[str]:
    """Vertical grid lines, tick labels under the plot and the axis label."""
    out, ticks = [], ax.ticks()
    fmt = fmt or (number if ax.log else tick_format(ticks))
    for t in ticks:
        x = ax(t)
        out.append(f'<line x1="{x:.1f}" y1="{y_top}" x2="{x:.1f}" y2="{y_bottom}" stroke="{GRID}"/>'
                   f'<text x="{x:.1f}" y="{y_bottom + 15}" text-anchor="middle" class="v">{fmt(t)}</text>')
    mid = (ax.start + ax.end) / 2
    out.append(f'<text x="{mid:.1f}" y="{y_bottom + 33}" text-anchor="middle">{escape(label)}</text>')
    return out


def _y_axis(ay: Axis, x_left: float, x_right: float, label: str, fmt=None) -> list[str]:
    out, ticks = [], ay.ticks()
    fmt = fmt or (number if ay.log else tick_format(ticks))
    for t in ticks:
        y = ay(t)
        out.append(f'<line x1="{x_left}" y1="{y:.1f}" x2="{x_right}" y2="{y:.1f}" stroke="{GRID}"/>'
                   f'<text x="{x_left - 6}" y="{y + 4:.1f}" text-anchor="end" class="v">{fmt(t)}</text>')
    mid = (ay.start + ay.end) / 2
    out.append(f'<text x="16" y="{mid:.1f}" transform="rotate(-90 16 {mid:.1f})" text-anchor="middle">{escape(label)}</text>')
    return out


def _swatches(items: list[tuple[str, str, str]], x: float, y: float) -> tuple[list[str], float]:
    """A horizontal legend of (shape, fill, name); returns the parts and the x where it ends."""
    out = []
    for shape, fill, name in items:
        out.append(_marker(shape, x + 6, y - 4, 5, fill) + f'<text x="{x + 15}" y="{y}">{escape(name)}</text>')
        x += 30 + len(name) * _CHAR
    return out, x


def bars(chart_id: str, title: str, groups: list[str], series: dict[str, list[float | None]], unit: str, *,
         subtitle: str = "", reference: tuple[float, str] | None = None, percent: bool = False) -> str:
    """Horizontal grouped bars: one group per row label (stage, layer), one bar per series.

    ``None`` values are drawn as "n/a". ``reference`` draws a dashed vertical line at a value with a label
    (e.g. 1.0 = the baseline, or a measured peak). ``percent`` formats values as percentages.
    """
    names = list(series)
    bar, gap = (14 if len(names) > 1 else 16), 8
    label_w = min(300, max(len(g) for g in groups) * _CHAR + 16)
    left, plot_w = 12 + label_w, 460
    top = 58 if subtitle else 44
    legend_y = top
    top += (18 if len(names) > 1 else 0) + (16 if reference else 0)
    rows_h = len(groups) * (len(names) * bar + gap)
    width, height = max(left + plot_w + 70, 24 + len(subtitle) * 6.4), top + rows_h + 44
    values = [v for vs in series.values() for v in vs if v is not None] + ([reference[0]] if reference else [])
    hi = span(values or [1.0], zero=True)[1] if max(values or [0]) > 0 else 1.0
    ax = Axis(0.0, hi, left, left + plot_w)
    parts = _open(chart_id, width, height, title, subtitle)
    if len(names) > 1:
        parts += _swatches([("square", colour(i), n) for i, n in enumerate(names)], left, legend_y + 4)[0]
    show = (lambda v: f"{v * 100:.3g}%") if percent else number
    parts += _x_axis(ax, top - 4, top + rows_h, unit, show if percent else None)
    if reference:
        x = ax(reference[0])
        anchor = "end" if x > left + plot_w * 0.6 else "middle"
        parts.append(f'<line x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" y2="{top + rows_h}" stroke="{INK}" '
                     f'stroke-dasharray="5 3"/><text x="{x:.1f}" y="{top - 12}" text-anchor="{anchor}" '
                     f'class="v">{escape(reference[1])}</text>')
    y = top
    for g, group in enumerate(groups):
        shown = group if len(group) * _CHAR <= label_w - 10 else group[: int((label_w - 10) / _CHAR) - 1] + "…"
        parts.append(f'<text x="{left - 8}" y="{y + len(names) * bar / 2 + 4:.1f}" text-anchor="end">'
                     f"<title>{escape(group)}</title>{escape(shown)}</text>")
        for s, name in enumerate(names):
            value = series[name][g]
            if value is None:
                parts.append(f'<text x="{left + 4}" y="{y + bar - 4}" class="v">n/a</text>')
            else:
                w = max(0.0, ax(value) - left)
                parts.append(f'<rect x="{left}" y="{y}" width="{max(w, 1):.1f}" height="{bar - 2}" fill="{colour(s)}">'
                             f"<title>{escape(group)} · {escape(name)}: {escape(show(value))} {escape(unit)}</title></rect>"
                             f'<text x="{left + w + 4:.1f}" y="{y + bar - 4}" class="v">{escape(show(value))}</text>')
            y += bar
        y += gap
    parts.append(f'<line x1="{left}" y1="{top - 4}" x2="{left}" y2="{top + rows_h}" stroke="{INK}"/>')
    return "".join(parts) + "</svg>"


@dataclass
class Point:
    """One model on a trade-off chart: ``series`` picks the colour, ``shape`` the marker."""

    label: str
    x: float
    y: float
    series: str
    shape: str = "circle"


def pareto_front(points: list[Point]) -> list[Point]:
    """The points no other point beats on both axes (lower x and higher y), sorted by x."""
    front: list[Point] = []
    for p in sorted(points, key=lambda p: (p.x, -p.y)):
        if not front or p.y > front[-1].y:
            front.append(p)
    return front


def pareto(chart_id: str, title: str, points: list[Point], xlabel: str, ylabel: str, *, subtitle: str = "",
           shapes: dict[str, str] | None = None, log_x: bool | None = None, y_max: float | None = None) -> str:
    """A trade-off scatter (lower x and higher y are better) with its Pareto front highlighted.

    Points are lettered; the list beside the plot names them (front members in bold). ``shapes`` maps a
    marker shape to what it means, for the legend. ``log_x`` defaults to a log axis when x spans > 10x.
    ``y_max`` caps the y axis where the metric cannot go higher (100 % accuracy).
    """
    series = list(dict.fromkeys(p.series for p in points))
    front = pareto_front(points)
    on_front = {id(p) for p in front}
    xs, ys = [p.x for p in points], [p.y for p in points]
    log_x = (min(xs) > 0 and max(xs) / min(xs) > 10) if log_x is None else log_x
    left, top, plot_w, plot_h = 64, (82 if subtitle else 66), 430, 300
    list_x = left + plot_w + 24
    list_h = 16 * len(points) + 18
    width, height = list_x + 280, top + max(plot_h, list_h) + 48
    ax = Axis(*span(xs, log=log_x), left, left + plot_w, log=log_x)
    y_lo, y_hi = span(ys)
    ay = Axis(y_lo, y_hi if y_max is None else min(y_hi, max(y_max, *ys)), top + plot_h, top)
    parts = _open(chart_id, width, height, title, subtitle)
    legend = [("circle", colour(i), s) for i, s in enumerate(series)]
    legend += [(shape, GREY, meaning) for shape, meaning in (shapes or {}).items()]
    items, end = _swatches(legend, left, top - 14)
    parts += items
    parts.append(f'<path d="M{end + 4} {top - 18}h22" stroke="{INK}" stroke-width="2" stroke-dasharray="6 3" fill="none"/>'
                 f'<text x="{end + 32}" y="{top - 14}">Pareto front (better: ← smaller, ↑ higher)</text>')
    parts += _x_axis(ax, top, top + plot_h, xlabel)
    parts += _y_axis(ay, left, left + plot_w, ylabel)
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="{INK}"/>')
    if len(front) > 1:
        path = f"M{ax(front[0].x):.1f} {ay(front[0].y):.1f}" + "".join(
            f"H{ax(p.x):.1f}V{ay(p.y):.1f}" for p in front[1:])
        parts.append(f'<path d="{path}" stroke="{INK}" stroke-width="2" stroke-dasharray="6 3" fill="none"/>')
    labels: dict[tuple[int, int], list[str]] = {}
    order = sorted(range(len(points)), key=lambda i: id(points[i]) in on_front)  # front drawn last, on top
    for i in order:
        p = points[i]
        x, y = ax(p.x), ay(p.y)
        best = id(p) in on_front
        style = f'stroke="{INK}" stroke-width="1.5"' if best else 'stroke="#fff" stroke-width="1" fill-opacity="0.75"'
        parts.append(_marker(p.shape, x, y, 6.5 if best else 5.5, colour(series.index(p.series)), style,
                             f"{p.label}: {xlabel} {p.x:.4g}, {ylabel} {p.y:.4g}"))
        labels.setdefault((round(x), round(y)), []).append(_letter(i))
    parts += _point_labels(labels)
    parts.append(f'<text x="{list_x}" y="{top + 4}" class="b">models</text>')
    for i, p in enumerate(points):
        y = top + 22 + 16 * i
        name = p.label if len(p.label) <= 36 else p.label[:35] + "…"
        weight = ' class="b"' if id(p) in on_front else ""
        parts.append(_marker(p.shape, list_x + 5, y - 4, 4.5, colour(series.index(p.series)))
                     + f'<text x="{list_x + 14}" y="{y}"{weight}><title>{escape(p.label)}</title>{_letter(i)}  {escape(name)}</text>')
    return "".join(parts) + "</svg>"


def _point_labels(labels: dict[tuple[int, int], list[str]]) -> list[str]:
    """Letters beside their points, each moved to the first nearby spot that no marker or earlier letter covers."""
    out, taken = [], [(x - 7, y - 7, x + 7, y + 7) for x, y in labels]
    for (x, y), letters in sorted(labels.items(), key=lambda item: item[0][1]):  # top first: it takes the spot above
        text = ",".join(letters)
        w = 7 * len(text)
        for dx, dy, anchor in ((8, -6, "start"), (8, 14, "start"), (-8, -6, "end"), (-8, 14, "end"), (8, -18, "start"),
                               (-8, -18, "end"), (8, 26, "start")):
            x0 = x + dx if anchor == "start" else x + dx - w
            box = (x0, y + dy - 10, x0 + w, y + dy + 1)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in taken):
                break
        taken.append(box)
        out.append(f'<text x="{x + dx}" y="{y + dy}" text-anchor="{anchor}" class="v">{text}</text>')
    return out


def _letter(i: int) -> str:
    """A, B, ..., Z, AA, AB, ...: point names that cannot be mistaken for stage numbers."""
    return chr(65 + i) if i < 26 else _letter(i // 26 - 1) + chr(65 + i % 26)


def histogram(chart_id: str, title: str, hist: dict, reference: dict | None, *, subtitle: str = "",
              label: str = "after", reference_label: str = "before", tint: str = PALETTE[0]) -> str:
    """A weight histogram (log count axis) as a coloured step line over a grey ``reference`` histogram.

    ``hist`` / ``reference``: ``{"edges": [n + 1], "counts": [n]}`` as written by
    :func:`slimkit.measure.layers.weight_histogram`.
    """
    left, top, plot_w, plot_h = 56, (76 if subtitle else 62), 330, 160
    width, height = left + plot_w + 16, top + plot_h + 46
    shown = [h for h in (reference, hist) if h]
    edges = [e for h in shown for e in h["edges"]]
    ax = Axis(*span(edges, pad=0.0), left, left + plot_w)
    peak = max(c for h in shown for c in h["counts"])
    ay = Axis(0.5, max(peak, 1) * 2.0, top + plot_h, top, log=True)
    parts = _open(chart_id, width, height, title, subtitle)
    legend = [("square", tint, label)] + ([("square", GREY, reference_label)] if reference else [])
    parts += _swatches(legend, left, top - 12)[0]
    parts += _x_axis(ax, top, top + plot_h, "weight value")
    parts += _y_axis(ay, left, left + plot_w, "count (log)")
    for h, fill, stroke in ((reference, "#d1d5db", "none"), (hist, tint, tint)):
        if not h:
            continue
        base = ay(0.5)
        d = f"M{ax(h['edges'][0]):.1f} {base:.1f}" + "".join(
            f"V{ay(max(c, 0.5)):.1f}H{ax(h['edges'][i + 1]):.1f}" for i, c in enumerate(h["counts"])) + f"V{base:.1f}"
        opacity = "0.9" if h is reference else "0.25"
        parts.append(f'<path d="{d}" fill="{fill}" fill-opacity="{opacity}" stroke="{stroke}" stroke-width="1.5"/>')
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="{INK}"/>')
    return "".join(parts) + "</svg>"
