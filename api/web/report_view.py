"""The printable view of a credit report or query result (issue 23): every value with its source and mode, the
withheld fields with their reasons, and the monthly histories as charts of their ranges. It shows exactly the
signed document (and carries the signed note, so a printed copy can be checked)."""

from __future__ import annotations

from typing import Any

_W, _H = 360, 80


def _mid(value: Any) -> float | None:
    if isinstance(value, dict) and "from" in value:
        return (float(value["from"]) + float(value["to"])) / 2
    if isinstance(value, int | float):
        return float(value)
    return None


def charts(part: dict[str, Any]) -> list[dict[str, Any]]:
    """Per field of a monthly history: bars (an SVG-ready list) of each month's range (or value)."""
    rows = part.get("rows") or []
    if not rows:
        return []
    fields = [k for k, v in rows[0].items() if isinstance(v, dict) and "mode" in v]
    out = []
    for f in fields:
        points = []
        for r in rows:
            cell = r.get(f) or {}
            value = cell.get("value")
            lo = hi = None
            if isinstance(value, dict) and "from" in value:
                lo, hi = float(value["from"]), float(value["to"])
            elif isinstance(value, int | float):  # the subject's own view: a bar from zero
                lo, hi = 0.0, float(value)
            points.append((str(r.get("month", "")), lo, hi))
        top = max((h for _, _, h in points if h is not None), default=0.0) or 1.0
        step = _W / max(len(points), 1)
        bars = [
            {
                "x": round(i * step + 1, 1),
                "w": round(max(step - 2, 1), 1),
                "y": round(_H - (hi / top) * _H, 1),
                "h": round(max((hi - (lo or 0)) / top * _H, 1.5), 1),
                "label": f"{m}: {lo:g}–{hi:g}",
            }
            for i, (m, lo, hi) in enumerate(points)
            if hi is not None and lo is not None
        ]
        out.append({"field": f, "mode": rows[0][f].get("mode"), "bars": bars, "width": _W, "height": _H})
    return out


def render_report(document: dict[str, Any], note: str) -> str:
    from api.web.core import _templates  # here: api.web.core imports the routes that import this module

    consented = document.get("sections", {}).get("consented", {}) or dict(document.get("results") or {})
    return _templates.get_template("credit_report.html").render(
        doc=document,
        note=note,
        charts={name: charts(part) for name, part in consented.items()},
        consented=consented,
        t=lambda key: key,
    )
