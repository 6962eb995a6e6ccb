"""The monitor's timeline figure: negative share per topic over the periods, alerts marked."""

from __future__ import annotations

import datetime as dt

TIMELINE_FILE = "monitor_timeline.png"


def timeline_figure(report: dict):
    """A matplotlib Figure of :func:`mgpt.apps.monitor.analyse`'s report: one line per topic (its negative share
    in each period where it has items; gaps elsewhere) and a red cross on every alert."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no display backend

    starts = [dt.datetime.fromisoformat(p["start"]) for p in report["periods"]]
    fig = Figure(figsize=(9, 4))
    axis = fig.add_subplot()
    for topic in report["topics"]:
        shares = [p["topics"][topic]["negative_share"] if topic in p["topics"] else float("nan")
                  for p in report["periods"]]
        axis.plot(starts, shares, "o-", markersize=3, label=topic)
    alerts = report["alerts"]
    if alerts:
        at = {p["period"]: start for p, start in zip(report["periods"], starts)}
        axis.scatter([at[a["period"]] for a in alerts], [a["share"] for a in alerts], marker="x", s=80,
                     color="red", zorder=3, label="alert")
    settings = report["settings"]
    axis.set_ylim(0, 1)
    axis.set_ylabel(f"{settings['negative_label']} share")
    axis.set_xlabel(settings["period"])
    axis.set_title(f"{settings['negative_label']} share per {settings['period']} "
                   f"(alert: > baseline + {settings['margin']:g}, >= {settings['min_items']} items)")
    axis.legend(fontsize="small", loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig
