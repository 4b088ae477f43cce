"""The evaluation report of a registered model: the ROC, KS and calibration curves drawn, and the figures
beside them.

:func:`render_html` builds one self-contained HTML page (inline SVG from matplotlib, no scripts, no external
resources), so a bank can open it from the console, save it, or attach it to a model-risk review. What it shows
comes from a :class:`models.metrics.Evaluation`, which holds curves and counts only, never labels or scores.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from models.metrics import Evaluation


def _figure(width: float, height: float) -> tuple[Figure, Any]:
    """A figure outside pyplot: no global backend switched, no global state (safe in the API's threads)."""
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prologue: the SVG is inlined


def roc_svg(ev: Evaluation) -> str:
    fig, ax = _figure(4.6, 4.2)
    fpr, tpr = zip(*ev.roc, strict=True)
    ax.plot(fpr, tpr, color="#1f5fa8", lw=2, label=f"model (AUC {ev.auc:.3f})")
    ax.plot([0, 1], [0, 1], color="#999999", lw=1, ls="--", label="random (AUC 0.5)")
    ax.set(
        xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title="ROC"
    )
    ax.legend(loc="lower right", frameon=False)
    ax.grid(alpha=0.3)
    return _svg(fig)


def ks_svg(ev: Evaluation, title: str = "Kolmogorov-Smirnov") -> str:
    fig, ax = _figure(4.6, 4.2)
    share, tpr, fpr = zip(*ev.ks_points, strict=True)
    ax.plot(share, tpr, color="#b22222", lw=2, label="defaults (cumulative)")
    ax.plot(share, fpr, color="#2e7d32", lw=2, label="non-defaults (cumulative)")
    k = max(range(len(share)), key=lambda i: abs(tpr[i] - fpr[i]))
    ax.vlines(share[k], fpr[k], tpr[k], colors="#333333", lw=1.5, ls=":")
    ax.annotate(
        f"KS {ev.ks:.3f}", (share[k], (tpr[k] + fpr[k]) / 2), xytext=(8, 0), textcoords="offset points"
    )
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="share of applicants, highest risk first",
        ylabel="cumulative share",
        title=title,
    )
    ax.legend(loc="lower right", frameon=False)
    ax.grid(alpha=0.3)
    return _svg(fig)


def reliability_svg(ev: Evaluation, title: str = "Calibration") -> str:
    """Predicted default probability against the observed default rate, per equal-mass bin (a perfectly
    calibrated model lies on the diagonal)."""
    fig, ax = _figure(4.6, 4.2)
    cal = ev.calibration
    if cal is None:
        raise ValueError("this evaluation has no calibration (the scores were not probabilities)")
    predicted, observed, _ = zip(*cal.reliability, strict=True)
    top = max(0.05, *predicted, *observed) * 1.1
    ax.plot([0, top], [0, top], color="#999999", lw=1, ls="--", label="perfectly calibrated")
    ax.plot(predicted, observed, color="#6a3d9a", lw=2, marker="o", label=f"model (ECE {cal.ece:.3f})")
    ax.set(
        xlim=(0, top),
        ylim=(0, top),
        xlabel="mean predicted default probability",
        ylabel="observed default rate",
        title=title,
    )
    ax.legend(loc="upper left", frameon=False)
    ax.grid(alpha=0.3)
    return _svg(fig)


def compare_svg(evaluations: Mapping[str, Evaluation], title: str = "ROC") -> str:
    """Several models' ROC curves on one chart (AUC in the legend)."""
    fig, ax = _figure(5.6, 4.6)
    for name, ev in evaluations.items():
        fpr, tpr = zip(*ev.roc, strict=True)
        ax.plot(fpr, tpr, lw=1.8, label=f"{name} (AUC {ev.auc:.3f})")
    ax.plot([0, 1], [0, 1], color="#999999", lw=1, ls="--")
    ax.set(
        xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title
    )
    ax.legend(loc="lower right", frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return _svg(fig)


def _row(name: str, value: Any) -> str:
    return f"<tr><th>{html.escape(name)}</th><td>{html.escape(str(value))}</td></tr>"


def _comparison(ev: Evaluation) -> str:
    """The value of joining: this model against the bank's own-features model on the same held-out rows."""
    if ev.baseline is None:
        return ""
    b = ev.baseline

    def cal(e: Evaluation, what: str) -> str:
        if e.calibration is None:
            return "-"
        return f"{getattr(e.calibration, what):.4f}"

    rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{e.auc:.4f}</td><td>{e.ks:.4f}</td>"
        f"<td>{cal(e, 'brier')}</td><td>{cal(e, 'ece')}</td></tr>"
        for name, e in (("this model (joined)", ev), ("bank alone (its own features)", b))
    )
    gain = ev.auc - b.auc
    verdict = (
        f"Joining gains {gain:+.4f} AUC over the bank's own model on the same rows."
        if gain > 0
        else f"Joining does not beat the bank's own model on these rows ({gain:+.4f} AUC)."
    )
    return (
        "<h2>Against the bank alone</h2><table class='comparison'><tr><th></th><th>AUC</th><th>KS</th>"
        f"<th>Brier</th><th>ECE</th></tr>{rows}</table><p>{html.escape(verdict)}</p>"
    )


def render_html(model: Mapping[str, Any], ev: Evaluation | None) -> str:
    """The page for one model: ``model`` is the registry's public description (id, name, kind, owners,
    features, training, created_at); ``ev`` its evaluation, or ``None`` (the page says none was posted)."""
    title = f"{model.get('name', model.get('id', 'model'))} — evaluation"
    meta = "".join(
        _row(k, v)
        for k, v in (
            ("model", model.get("id")),
            ("kind", model.get("kind")),
            ("owners", ", ".join(model.get("owners", []))),
            ("features", len(model.get("features", []))),
            ("registered", model.get("created_at")),
        )
    )
    training = "".join(
        _row(str(k), v)
        for k, v in sorted(model.get("training", {}).items())
        if not isinstance(v, dict | list)
    )
    if ev is None:
        body = "<p class='empty'>No held-out evaluation has been posted for this model yet.</p>"
    else:
        c = ev.confusion
        figures = "".join(
            _row(k, v)
            for k, v in (
                ("held-out rows", f"{ev.n:,} ({ev.positives:,} defaults)"),
                ("AUC", f"{ev.auc:.4f}"),
                ("KS", f"{ev.ks:.4f} (at the riskiest {ev.ks_share:.1%})"),
                ("cut-off", f"{c.cutoff:g}"),
                ("precision / recall", f"{c.precision:.3f} / {c.recall:.3f}"),
                ("accuracy", f"{c.accuracy:.3f}"),
                *(
                    ()
                    if ev.calibration is None
                    else (
                        ("Brier score", f"{ev.calibration.brier:.4f}"),
                        ("expected calibration error", f"{ev.calibration.ece:.4f}"),
                        (
                            "mean predicted / observed default rate",
                            f"{ev.calibration.mean_predicted:.2%} / {ev.calibration.observed_rate:.2%}",
                        ),
                    )
                ),
            )
        )
        confusion = (
            "<table class='confusion'><tr><th></th><th>predicted default</th><th>predicted good</th></tr>"
            f"<tr><th>default</th><td>{c.tp:,}</td><td>{c.fn:,}</td></tr>"
            f"<tr><th>good</th><td>{c.fp:,}</td><td>{c.tn:,}</td></tr></table>"
        )
        plots = [roc_svg(ev), ks_svg(ev)] + ([reliability_svg(ev)] if ev.calibration is not None else [])
        if ev.baseline is not None:
            plots.append(
                compare_svg({"this model": ev, "bank alone": ev.baseline}, "ROC: joined vs bank alone")
            )
        body = (
            "<div class='plots'>" + "".join(f"<figure>{svg}</figure>" for svg in plots) + "</div>"
            f"<table>{figures}</table>{_comparison(ev)}<h2>Confusion at the cut-off</h2>{confusion}"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 64rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ text-align: left; padding: .25rem .75rem; border-bottom: 1px solid #ddd; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 1rem; }} figure {{ margin: 0; }}
.confusion td {{ text-align: right; }} .empty {{ color: #666; font-style: italic; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<table>{meta}</table>
<h2>Held-out evaluation</h2>
{body}
<h2>Training</h2>
<table>{training}</table>
</body></html>
"""
