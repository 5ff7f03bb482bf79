"""Small self-contained SVG charts (no scripts, no network); every label is escaped."""
from __future__ import annotations

from html import escape

PALETTE = ("#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777")


def grouped_bars(title: str, groups: list[str], series: dict[str, list[float]], unit: str) -> str:
    """Horizontal bars: one group per stage, one bar per series (e.g. backend/batch)."""
    names = list(series)
    bar, gap, left, width = 14, 10, 190, 460
    height = 40 + len(groups) * (len(names) * bar + gap) + 20 * len(names)
    top = max([v for values in series.values() for v in values] + [1e-12])
    parts = [_open(width + left + 90, height), _title(title)]
    y = 36
    for g, group in enumerate(groups):
        parts.append(f'<text x="{left - 8}" y="{y + len(names) * bar / 2 + 4}" text-anchor="end">{escape(group)}</text>')
        for s, name in enumerate(names):
            value = series[name][g]
            w = max(1.0, width * value / top)
            parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar - 2}" fill="{PALETTE[s % len(PALETTE)]}">'
                         f"<title>{escape(name)}: {value:.4g} {escape(unit)}</title></rect>")
            parts.append(f'<text x="{left + w + 4:.1f}" y="{y + bar - 4}" class="v">{value:.3g}</text>')
            y += bar
        y += gap
    parts.append(_legend(names, 10, y + 6))
    return "".join(parts) + "</svg>"


def scatter(title: str, points: list[tuple[str, float, float]], xlabel: str, ylabel: str) -> str:
    """Labelled points (label, x, y), e.g. size against accuracy for every stage."""
    left, top, w, h = 70, 36, 480, 260
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    x0, x1 = _span(xs)
    y0, y1 = _span(ys)
    sx = lambda x: left + (x - x0) / (x1 - x0) * w  # noqa: E731
    sy = lambda y: top + h - (y - y0) / (y1 - y0) * h  # noqa: E731
    parts = [_open(left + w + 160, top + h + 50), _title(title),
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#999"/>',
             f'<text x="{left + w / 2}" y="{top + h + 36}" text-anchor="middle">{escape(xlabel)}</text>',
             f'<text x="14" y="{top + h / 2}" transform="rotate(-90 14 {top + h / 2})" text-anchor="middle">{escape(ylabel)}</text>']
    for value, pos in ((x0, left), (x1, left + w)):
        parts.append(f'<text x="{pos}" y="{top + h + 16}" text-anchor="middle" class="v">{value:.4g}</text>')
    for value, pos in ((y0, top + h), (y1, top)):
        parts.append(f'<text x="{left - 6}" y="{pos + 4}" text-anchor="end" class="v">{value:.4g}</text>')
    for i, (label, x, y) in enumerate(points):
        color = PALETTE[i % len(PALETTE)]
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="6" fill="{color}"><title>{escape(label)}: {x:.4g}, {y:.4g}</title></circle>')
        parts.append(f'<text x="{sx(x) + 9:.1f}" y="{sy(y) + 4:.1f}">{escape(label)}</text>')
    return "".join(parts) + "</svg>"


def _span(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or abs(hi) * 0.05 or 1.0
    return lo - pad, hi + pad


def _open(width: float, height: float) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img">'
            '<style>text{font:12px sans-serif;fill:#222}.v{fill:#555;font-size:11px}.t{font-weight:bold;font-size:14px}</style>')


def _title(text: str) -> str:
    return f'<text x="10" y="20" class="t">{escape(text)}</text>'


def _legend(names: list[str], x: float, y: float) -> str:
    out = []
    for i, name in enumerate(names):
        out.append(f'<rect x="{x}" y="{y + i * 18}" width="12" height="12" fill="{PALETTE[i % len(PALETTE)]}"/>'
                   f'<text x="{x + 18}" y="{y + i * 18 + 10}">{escape(name)}</text>')
    return "".join(out)
