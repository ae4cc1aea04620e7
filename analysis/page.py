"""The report as a page: ``report.md`` and a self-contained ``report.html`` (plots embedded as
data URIs, no file beside it needed), from the sections in reading order.

Each section is one ``<h2>`` with an anchor, listed in the table of contents (the appendix
apart); inside it come its sentences, then its tables, each plot after them with a caption that
says what to read from it (``PLOT_CAPTIONS``, by file stem, unless the section gives its own).
Numbers and intervals never break inside ("32.0 ± 2.8", "[30.1, 33.0]" are kept on one line);
text cells wrap, so a table fits a 1280 px window; on a phone a wide table scrolls sideways.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

from analysis.section import Section
from analysis.table import MISSING, Table, tidy, to_markdown

TITLE = "detbench report"

PLOT_CAPTIONS = {
    "speed_vs_accuracy": "Each detector's AP against its speed at batch 1 (log scale), error bars the 95% "
                         "interval; the dashed step is the Pareto front: a point below it is beaten on both axes.",
    "ap_by_size": "AP on small, medium and large objects per detector: the gap between the bars is how much "
                  "object size matters to each.",
    "candidates_vs_ap": "Boxes scored per image before NMS (log) against AP: more candidates is not more accuracy.",
    "pr_curves": "Precision against recall at IoU 0.5, per object size: a curve that ends early to the left "
                 "is a detector that never finds the rest of the objects.",
    "pr_curves_per_class": "Precision against recall at IoU 0.5 for each class, one line per detector: the class "
                           "where the curves part is where the detectors differ.",
    "prf_confidence": "Precision, recall and F1 against the score threshold, per detector; the marked point is the "
                      "operating point (highest F1 on the validation split) the detection grid uses.",
    "confusion_matrix": "Where each ground-truth class (rows) ends up among the detections at the operating point "
                        "(columns), row-normalised; 'background' column: missed; 'background' row: false "
                        "detections on nothing. Off-diagonal cells are class confusions.",
    "error_breakdown": "AP50 points each kind of error costs (gained if it were fixed), per object size: the "
                       "longest bar is the error to work on first; every bar is drawn to its length.",
    "top_detections": "What each detector's most confident detections are: correct, badly placed, the wrong "
                      "class, or on background.",
    "training": "Each loss term on its own axis against iterations (bottom) and training FLOPs (top), the "
                "validations dotted; validation AP against iterations and against training FLOPs, where "
                "detectors of unequal cost compare at equal compute. A curve still falling (or AP still rising) "
                "at the end means the budget, not the detector, set the numbers.",
    "detection_grid": "Ground truth and each detector's detections at its own operating point (the threshold "
                      "stated in each column title).",
    "failure_gallery": "Per detector, the saved validation images with the most missed and false-positive boxes: "
                       "ground truth solid green, missed ground truth red, false detections dashed.",
    "found_missed": "Objects one detector finds and another misses (smallest first), ground truth drawn.",
}

_NUMERIC = re.compile(r"\[[^\]\[]*\]|[-+−]?\d[\d.,]*(?:\s*(?:±|/)\s*[-+−]?\d[\d.,]*)?(?:\s?(?:%|ms|s))?")
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.45;color:#1a1a1a;
max-width:1180px;margin:0 auto;padding:1em 16px 4em}
h1{font-size:1.7em;margin:.3em 0}h2{font-size:1.35em;margin:1.8em 0 .4em;padding-top:.4em;border-top:2px solid #ddd}
nav.toc{background:#f6f6f6;padding:.6em 1em;border-radius:6px}nav.toc ol{margin:.2em 0;padding-left:1.4em}
nav.toc li{margin:.1em 0}nav.toc .appendix{color:#555}
.table{overflow-x:auto;margin:.8em 0 1.2em}.caption{margin:.2em 0}
table.data{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
table.data th,table.data td{padding:3px 7px;border-bottom:1px solid #d8d8d8;vertical-align:top}
table.data th{text-align:left;background:#f2f2f2;overflow-wrap:anywhere}
td.num{text-align:right}td.text{text-align:left;overflow-wrap:anywhere;min-width:6em}
.nw{white-space:nowrap}.note{color:#555;font-size:90%;margin:.2em 0}
figure{margin:1em 0 1.6em}figure img{max-width:100%;height:auto;display:block;border:1px solid #eee}
figcaption{font-size:92%;color:#333;margin-top:.3em}
.sentences p{margin:.35em 0}.problems{color:#8a1c1c}
@media (max-width:700px){body{padding:.5em 8px}table.data{font-size:12px}}
"""


def anchor(title: str) -> str:
    """'Accuracy and speed' -> 'accuracy-and-speed'."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


def _cell(value) -> str:
    """One escaped cell: every number and interval inside it wrapped so it never breaks."""
    text = MISSING if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    out, last = [], 0
    for match in _NUMERIC.finditer(text):
        out += [html.escape(text[last:match.start()]),
                f"<span class='nw'>{html.escape(match.group())}</span>"]
        last = match.end()
    return "".join(out) + html.escape(text[last:])


def _is_number(value) -> bool:
    """A number, 'mean ± std', an interval, a ratio or a list of seeds: right-aligned."""
    text = re.sub(r"\b(ms|px|s)\b", "", str(value))
    return bool(re.fullmatch(r"[-+−–\d.,%± \[\]()/×→:]*", text)) and any(c.isdigit() for c in text)


def table_html(table: Table) -> str:
    """The table as HTML: numbers right-aligned and unbreakable, text cells that wrap."""
    shown = tidy(table.shown)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    rows = []
    for row in shown.itertuples(index=False):
        cells = "".join(f"<td class='{'num' if _is_number(v) or str(v) == MISSING else 'text'}'>{_cell(v)}</td>"
                        for v in row)
        rows.append(f"<tr>{cells}</tr>")
    body = (f"<table class='data' id='table-{table.name}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>") if len(shown) else "<p><i>(empty)</i></p>"
    note = f"<p class='note'>{html.escape(table.note)}</p>" if table.note else ""
    return f"<div class='table'><p class='caption'><b>{html.escape(table.title)}</b></p>{body}{note}</div>"


def caption_of(section: Section, plot: Path) -> str:
    return section.captions.get(plot.stem) or PLOT_CAPTIONS.get(plot.stem) or plot.stem.replace("_", " ")


def render(sections: list[Section], intro: list[str], problems: list[str], out: Path) -> tuple[str, str]:
    """(Markdown, self-contained HTML) of the report."""
    sections = [s for s in sections if s.sentences or s.plots or any(len(t.shown) for t in s.tables)]
    main = [s for s in sections if not s.appendix]
    appendix = [s for s in sections if s.appendix]
    toc = "".join(f"<li><a href='#{anchor(s.title)}'>{html.escape(s.title)}</a></li>" for s in main)
    if appendix:
        toc += ("<li class='appendix'>Appendix<ol>" + "".join(
            f"<li><a href='#{anchor(s.title)}'>{html.escape(s.title)}</a></li>" for s in appendix) + "</ol></li>")
    if problems:
        toc += "<li><a href='#problems'>Problems while building this report</a></li>"
    body = [f"<h1>{TITLE}</h1>"] + [f"<p>{html.escape(p)}</p>" for p in intro]
    body.append(f"<nav class='toc' aria-label='Contents'><b>Contents</b><ol>{toc}</ol></nav>")
    md = [f"# {TITLE}\n"] + [f"{p}\n" for p in intro] + ["**Contents**\n"]
    md += [f"{i}. [{s.title}](#{anchor(s.title)})" for i, s in enumerate(main, 1)]
    md += [f"- Appendix: [{s.title}](#{anchor(s.title)})" for s in appendix] + [""]
    for section in main + appendix:
        prefix = "Appendix: " if section.appendix else ""
        body.append(f"<section id='{anchor(section.title)}'><h2>{prefix}{html.escape(section.title)}</h2>")
        md.append(f"## {prefix}{section.title}\n")
        if section.sentences:
            body.append("<div class='sentences'>" + "".join(f"<p>{html.escape(t)}</p>" for t in section.sentences)
                        + "</div>")
            md += [f"{t}\n" for t in section.sentences]
        for table in section.tables:
            body.append(table_html(table))
            md.append(f"**{table.title}**\n\n{to_markdown(table)}")
        for plot in section.plots:
            caption = caption_of(section, plot)
            data = base64.b64encode(plot.read_bytes()).decode()
            body.append(f"<figure id='fig-{plot.stem}'><img alt='{html.escape(plot.stem)}' "
                        f"src='data:image/png;base64,{data}'><figcaption><b>{html.escape(plot.stem)}.</b> "
                        f"{html.escape(caption)}</figcaption></figure>")
            rel = plot.relative_to(out).as_posix()
            md.append(f"![{plot.stem}]({rel})  \n*{caption}* ([PDF]({Path(rel).with_suffix('.pdf')}))\n")
        body.append("</section>")
    if problems:
        body.append("<section id='problems' class='problems'><h2>Problems while building this report</h2>"
                    + "".join(f"<p>{html.escape(p)}</p>" for p in problems) + "</section>")
        md += ["## Problems while building this report\n"] + [f"{p}\n" for p in problems]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{TITLE}</title>"
            f"<link rel='icon' href='data:,'><style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
    return "\n".join(md), page
