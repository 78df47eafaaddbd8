"""Spend over time as a stacked bar chart, computed here and drawn by the page as inline SVG (pure: no
JavaScript library, no image service; the template escapes every label)."""

from __future__ import annotations

from dataclasses import dataclass

from services.api.cost_query import usd_text

PALETTE = ("#3867d6", "#20bf6b", "#f7b731", "#eb3b5a", "#8854d0", "#0fb9b1", "#a5b1c2")
OTHERS = "(others)"


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    fill: str
    title: str  # the tooltip: day, group, amount


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    x_labels: list[tuple[float, str]]  # (x of the label's middle, day)
    y_ticks: list[tuple[float, str]]  # (y, USD)
    legend: list[tuple[str, str]]  # (fill, group)
    left: int
    bottom: float


def stacked(
    days: list[str], spend: dict[str, dict[str, int]], width: int = 760, height: int = 260, top_n: int = 6
) -> Chart:
    """`spend[group][day]` in micro-dollars as one bar per day, a segment per group: the `top_n` groups
    that spent most, the rest as one."""
    ranked = sorted(spend, key=lambda g: (-sum(spend[g].values()), g))
    shown = ranked[:top_n]
    series = {g: spend[g] for g in shown}
    if len(ranked) > top_n:
        rest: dict[str, int] = {}
        for g in ranked[top_n:]:
            for day, micros in spend[g].items():
                rest[day] = rest.get(day, 0) + micros
        series[OTHERS] = rest
    left, right, top, bottom = 80, 10, 10, height - 30
    plot_w, plot_h = width - left - right, bottom - top
    peak = max([sum(s.get(d, 0) for s in series.values()) for d in days] + [1])
    slot = plot_w / max(len(days), 1)
    fills = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(series)}
    bars: list[Bar] = []
    for i, day in enumerate(days):
        y = float(bottom)
        for group, by_day in series.items():
            micros = by_day.get(day, 0)
            if micros <= 0:
                continue
            h = plot_h * micros / peak
            y -= h
            title = f"{day} {group}: ${usd_text(micros)}"
            bars.append(Bar(left + i * slot + slot * 0.15, y, slot * 0.7, h, fills[group], title))
    every = max(1, len(days) // 10)  # at most about ten day labels
    x_labels = [(left + (i + 0.5) * slot, d[5:]) for i, d in enumerate(days) if i % every == 0]
    y_ticks = [(bottom - plot_h * k / 4, f"${usd_text(peak * k // 4)}") for k in range(5)]
    legend = [(fills[g], g) for g in series]
    return Chart(width, height, bars, x_labels, y_ticks, legend, left, float(bottom))
