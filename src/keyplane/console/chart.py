"""The verification view's chart: requests a minute by reason over the last hour, as inline SVG drawn on the
server (no script, no chart library; the same numbers are in a table beside it)."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

VALID = "VALID"
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 240, 44, 22, 8
# colour-blind-safe (Okabe-Ito); VALID is always the first, the refusals in order of their hour's count
PALETTE = ("#009e73", "#d55e00", "#0072b2", "#e69f00", "#cc79a7", "#56b4e9", "#f0e442", "#999999")
MAX_SERIES = len(PALETTE)
OTHER = "other refusals"


@dataclass(frozen=True, slots=True)
class Series:
    """Per-minute counts by reason, oldest minute first; ``counting`` is False when metrics are off."""

    minutes: list[tuple[int, dict[str, int]]]
    counting: bool = True

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _start, counts in self.minutes:
            for reason, n in counts.items():
                out[reason] = out.get(reason, 0) + n
        return dict(sorted(out.items(), key=lambda item: (item[0] != VALID, -item[1], item[0])))

    def reasons(self) -> list[str]:
        """The reasons drawn, VALID first; past the palette the smallest refusals are drawn as one."""
        names = list(self.totals())
        return names if len(names) <= MAX_SERIES else [*names[: MAX_SERIES - 1], OTHER]


def _grouped(counts: dict[str, int], reasons: list[str]) -> dict[str, int]:
    if OTHER not in reasons:
        return counts
    out = {reason: counts.get(reason, 0) for reason in reasons[:-1]}
    out[OTHER] = sum(n for reason, n in counts.items() if reason not in out)
    return out


def colours(series: Series) -> dict[str, str]:
    return dict(zip(series.reasons(), PALETTE, strict=False))


def render(series: Series) -> str:
    """An ``<svg>`` of stacked bars, one a minute; every rectangle has a ``<title>`` with its numbers."""
    reasons = series.reasons()
    palette = colours(series)
    grouped = [(start, _grouped(counts, reasons)) for start, counts in series.minutes]
    peak = max([sum(counts.values()) for _s, counts in grouped] + [1])
    top = _nice(peak)
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(grouped), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title" '
        f'xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">Requests a minute over the last hour, valid and refused by reason</title>',
    ]
    for fraction in (0, 0.5, 1) if top > 1 else (0, 1):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - 4}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ccc"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="13">'
                     f"{top * fraction:g}</text>")
    for index, (start, counts) in enumerate(grouped):
        x = LEFT + index * slot
        y = TOP + plot_h
        for reason in reasons:
            n = counts.get(reason, 0)
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            label = escape(f"{_clock(start)} UTC: {n} {reason}")
            parts.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(slot - 2, 1):.1f}" height="{h:.1f}" '
                         f'fill="{palette[reason]}"><title>{label}</title></rect>')
    for index, (start, _counts) in enumerate(grouped):
        if index % 10 == 0 or index == len(grouped) - 1:
            x = LEFT + index * slot + slot / 2
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="middle" font-size="13">'
                         f"{_clock(start)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _nice(peak: int) -> int:
    """The axis' top: 1, 2 or 5 times a power of ten, at least ``peak``."""
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= peak:
                return step * scale
        scale *= 10


def _clock(epoch: int) -> str:
    return f"{epoch // 3600 % 24:02d}:{epoch // 60 % 60:02d}"
