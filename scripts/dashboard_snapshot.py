"""Render the Grafana dashboard's panels from a scripted run into docs/dashboard/*.png.

    ./scripts/dashboard_snapshot            (sets up --dev first; about two minutes)

Plays the run of tests/integration/test_prometheus.py (consumer/dev/observed_run.py) on a
local broker and the emulator, under the same real Prometheus, then draws every panel of
each dashboard row from Prometheus's query_range answers: one PNG per row, plus one of
the alerts that fired. On demand, not in CI; the PNGs are checked in for the README.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, PercentFormatter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the Prometheus harness lives with the tests

from consumer.dev.emulator.process import EmulatorProcess  # noqa: E402
from consumer.dev.kafka import LocalKafka  # noqa: E402
from consumer.dev.observed_run import (  # noqa: E402
    NAMESPACE,
    POD,
    RULES,
    ObservedRun,
    Panel,
    Phase,
    concrete,
    dashboard_panels,
)
from consumer.dev.topics import KafkaTools  # noqa: E402
from tests.integration.prometheus import Prometheus, running  # noqa: E402

OUT = ROOT / "docs" / "dashboard"
mpl.rcParams["axes.prop_cycle"] = mpl.cycler(color=mpl.colormaps["tab20"].colors)
COLUMNS = 3
PHASE_COLOURS = ("#fde2e2", "#fff1c9", "#e1f0da", "#dbe9f6", "#ecdff5", "#f7e4d0", "#e0f2f1")
_RUN_PREFIX = re.compile(r"observed-[0-9a-f]+\.")  # the run's unique topic prefix
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _mib(value: float, _: object) -> str:
    return f"{value / 2**20:.0f} MiB"


def _seconds(value: float, _: object) -> str:
    return f"{value:.0f} s" if abs(value) >= 1 or value == 0 else f"{value * 1000:.0f} ms"


# Grafana unit → (axis label, tick formatter)
UNITS: dict[str, tuple[str, Callable[[float, object], str] | None]] = {
    "ops": ("per second", None),
    "reqps": ("requests per second", None),
    "s": ("", _seconds),
    "bytes": ("", _mib),
    "percentunit": ("", None),
    "short": ("", None),
}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with LocalKafka() as broker, EmulatorProcess("--quiet") as emulator:
        observed = ObservedRun(KafkaTools(broker.bootstrap_servers), emulator)
        try:
            observed.warm_up()
            with running(observed.consumer.metrics_port, RULES, NAMESPACE, POD) as prometheus:
                start = time.time()
                phases = observed.run(prometheus.answers)
                end = time.time()
                # Whole steps back from the end, so query_range's last step is the end.
                run = Run(prometheus, phases, end - math.ceil(end - start), end)
                for row, panels in groupby(dashboard_panels(), key=lambda p: p.row):
                    path = OUT / f"{row.lower().replace(' ', '-')}.png"
                    _render_row(row, list(panels), run, path)
                    print(f"wrote {path.relative_to(ROOT)}")
                path = OUT / "alerts.png"
                _render_alerts(run, path)
                print(f"wrote {path.relative_to(ROOT)}")
        finally:
            observed.stop()
    return 0


@dataclass(frozen=True)
class Run:
    """What a picture is drawn from: the Prometheus that watched, and when and what ran."""

    prometheus: Prometheus
    phases: list[Phase]
    start: float
    end: float


def _render_row(row: str, panels: list[Panel], run: Run, path: Path) -> None:
    lines = math.ceil(len(panels) / COLUMNS)
    figure, grid = plt.subplots(
        lines, COLUMNS, figsize=(18, 5.6 * lines + 1.2), squeeze=False, layout="constrained"
    )
    figure.suptitle(f"iterable-consumer dashboard — {row}", fontsize=15, fontweight="bold")
    for axes, panel in zip(grid.flat, panels, strict=False):
        _phase_bands(axes, run)
        for expr, legend in panel.targets:
            for series in run.prometheus.query_range(concrete(expr), run.start, run.end):
                times = [float(t) - run.start for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                if _is_rate(expr) and not any(v for v in values if not math.isnan(v)):
                    continue  # a counter that never moved (the service exports them at 0)
                axes.plot(times, values, linewidth=1.4, label=_legend(legend, series["metric"]))
        _style(axes, panel)
    for axes in list(grid.flat)[len(panels) :]:
        axes.set_visible(False)
    _phase_key(figure, run.phases)
    figure.savefig(path, dpi=72)
    plt.close(figure)


def _render_alerts(run: Run, path: Path) -> None:
    """One bar per alert: pending (light) and firing (dark) over the run."""
    alerts = [rule["alert"] for rule in _rules()]
    figure, axes = plt.subplots(figsize=(18, 0.45 * len(alerts) + 1.8), layout="constrained")
    figure.suptitle("Alerts (rules as shipped, for: read as seconds)", fontsize=15)
    _phase_bands(axes, run)
    for state, colour in (("pending", "#f2b36f"), ("firing", "#c0392b")):
        expr = f'ALERTS{{alertstate="{state}"}}'
        for series in run.prometheus.query_range(expr, run.start, run.end):
            row = alerts.index(series["metric"]["alertname"])
            times = [float(t) - run.start for t, _ in series["values"]]
            axes.broken_barh(
                [(t, 1.0) for t in times], (row - 0.35, 0.7), color=colour, label=state
            )
    axes.set_yticks(range(len(alerts)), alerts)
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the run started")
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes.legend(unique.values(), unique.keys(), loc="lower right", bbox_to_anchor=(1, 1))
    axes.set_xlim(0, run.end - run.start + 1)  # the last evaluation's bar ends a second later
    _phase_key(figure, run.phases)
    figure.savefig(path, dpi=72)
    plt.close(figure)


def _rules() -> list[dict[str, Any]]:
    import yaml  # noqa: PLC0415 - a dev dependency, like matplotlib

    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _is_rate(expr: str) -> bool:
    return "rate(" in expr or "increase(" in expr


def _legend(template: str, labels: dict[str, str]) -> str:
    text = _LEGEND_LABEL.sub(lambda m: labels.get(m.group(1), ""), template) or "value"
    return _RUN_PREFIX.sub("", text)


def _style(axes: Axes, panel: Panel) -> None:
    title = panel.title + (" [stat]" if panel.kind == "stat" else "")
    axes.set_title(title, fontsize=12, loc="left")
    axes.set_xlabel("seconds since the run started", fontsize=9)
    label, formatter = UNITS.get(panel.unit, ("", None))
    axes.set_ylabel(label, fontsize=9)
    if panel.unit == "percentunit":
        axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    elif formatter is not None:
        axes.yaxis.set_major_formatter(FuncFormatter(formatter))
    axes.grid(alpha=0.3)
    axes.tick_params(labelsize=8)
    if axes.get_legend_handles_labels()[0]:
        # Under the plot, so it never hides a line.
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.13), ncol=2, frameon=False)
    else:
        axes.text(0.5, 0.5, "0 all along", transform=axes.transAxes, ha="center", color="grey")


def _phase_bands(axes: Axes, run: Run) -> None:
    for i, phase in enumerate(run.phases):
        colour = PHASE_COLOURS[i % len(PHASE_COLOURS)]
        axes.axvspan(phase.start - run.start, phase.end - run.start, color=colour, zorder=0, lw=0)


def _phase_key(figure: Any, phases: list[Phase]) -> None:
    """The phases' colours, once per figure, along the bottom."""
    handles = [
        Patch(color=PHASE_COLOURS[i % len(PHASE_COLOURS)], label=phase.name)
        for i, phase in enumerate(phases)
    ]
    figure.legend(
        handles=handles,
        loc="outside lower center",
        ncol=len(phases),
        fontsize=11,
        title="phases of the run (shaded)",
    )


if __name__ == "__main__":
    sys.exit(main())
