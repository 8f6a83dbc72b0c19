"""The investigation's chart: API calls an hour over the scope window, successful and failed,
against the principal's baseline, with the findings' first and last sightings. A PNG made
with matplotlib's Agg renderer (no screen, no global pyplot state), the same bytes for the
same investigation."""

import io

import matplotlib

matplotlib.use("Agg")

from matplotlib.dates import date2num
from matplotlib.figure import Figure

from models.investigation import Investigation

_SUCCESSFUL, _FAILED, _BASELINE, _FINDING = "#4c78a8", "#e45756", "#222222", "#f58518"


def volume_chart(investigation: Investigation) -> bytes:
    hours = investigation.hours
    x = [float(date2num(h.hour)) for h in hours]
    successful = [h.successful for h in hours]
    failed = [h.failed for h in hours]
    figure = Figure(figsize=(11, 4.2), dpi=100)
    axes = figure.add_subplot()
    width = 0.9 / 24  # days: nine tenths of an hour
    # Each bar spans its hour, from the hour's start.
    axes.bar(x, successful, width=width, align="edge", color=_SUCCESSFUL, label="successful")
    axes.bar(x, failed, width=width, align="edge", bottom=successful, color=_FAILED, label="failed")
    average = investigation.baseline.hourly_average
    days = (investigation.baseline.end - investigation.baseline.start).days
    axes.axhline(
        average,
        color=_BASELINE,
        linestyle="--",
        linewidth=1,
        label=f"baseline: {average:.2f} calls/hour ({days} days before)",
    )
    above = investigation.hours_above_baseline()
    if above:
        top = max(h.total for h in hours)
        axes.scatter(
            [date2num(h.hour) + width / 2 for h in above],
            [h.total + top * 0.04 for h in above],
            marker="v",
            color=_BASELINE,
            zorder=3,
            label="above baseline",
        )
    for moment, what in (
        (investigation.findings_first_seen, "finding first seen"),
        (investigation.findings_last_seen, "finding last seen"),
    ):
        if moment is not None:
            axes.axvline(date2num(moment), color=_FINDING, linewidth=1, linestyle=":", label=what)
    axes.set_title(f"API calls an hour (UTC): {investigation.principal_arn}", fontsize=10)
    axes.set_ylabel("calls")
    axes.xaxis_date(tz="UTC")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.autofmt_xdate()
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", metadata={"Software": None})
    return png.getvalue()
