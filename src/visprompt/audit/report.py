"""The audit's outputs: ``audit.csv`` (ranked), ``audit.html`` (self-contained, sortable and filterable) and a
corrected label file (``--fix``) in the CSV layout :func:`visprompt.data.custom.load_csv` reads.

Every file is written atomically (the whole new file or the old one); images and the user's files are only read.
The HTML page embeds its data as JSON and its thumbnails as base64 JPEG (the ``thumbnails`` highest-ranked rows),
has no external resources and works from a ``file://`` URL. Its controls: ``#filter-class`` (given or suggested
label is the class), ``#filter-given``, ``#filter-suggested``, ``#flagged-only``, clickable column headers
(``th[data-key]``, click again to reverse); ``#count`` says how many rows match.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visprompt.audit.score import AuditResult
from visprompt.data.records import DatasetSplits, Sample
from visprompt.errors import DataError
from visprompt.fileio import atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["check_fix_source", "class_summary", "confused_pairs", "write_csv", "write_fix", "write_html"]

CSV_COLUMNS = ("rank", "path", "given_label", "suggested_label", "confidence", "score", "flagged", "true_label")


def _rows(samples: Sequence[Sample], result: AuditResult, classnames: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for rank, i in enumerate(result.ranking(), 1):
        s = samples[i]
        true = s.true_label
        rows.append({
            "rank": rank, "index": int(i), "path": s.path, "given_label": classnames[result.given[i]],
            "suggested_label": classnames[result.suggested[i]], "confidence": round(float(result.confidence[i]), 4),
            "score": round(float(result.score[i]), 4), "flagged": bool(result.flagged[i]),
            "true_label": "" if true is None or true >= len(classnames) else classnames[true],
        })  # fmt: skip
    return rows


def write_csv(file: str | Path, samples: Sequence[Sample], result: AuditResult, classnames: Sequence[str]) -> Path:
    """One row per sample, most suspicious first (``true_label``: what the split records as true, may be blank)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in _rows(samples, result, classnames):
        w.writerow([r[c] if c != "flagged" else int(r[c]) for c in CSV_COLUMNS])
    return atomic_write_text(file, buf.getvalue())


def _tail(path: str) -> str:
    return "/".join(path.replace(os.sep, "/").rsplit("/", 2)[-2:])


def check_fix_source(source: DatasetSplits, samples: Sequence[Sample]) -> None:
    """Raise :class:`DataError` unless ``samples`` (a run's training samples) are ``source``'s training rows, each
    once, with the same label: what a corrected label file of ``source`` needs (the dataset unchanged since)."""
    full = source.train
    if sorted(s.index for s in samples) != list(range(len(full))):
        raise DataError(
            f"--fix: the run's {len(samples)} training samples are not the {len(full)} training rows of "
            f"{source.name} as it is now (changed since the run? train it again)"
        )
    for s in samples:
        row = full[s.index]
        if (row.label, row.classname, _tail(row.path)) != (s.label, s.classname, _tail(s.path)):
            raise DataError(
                f"--fix: the run's training sample {s.path} ({s.classname}) is not training row {s.index} of "
                f"{source.name} as it is now ({row.path}, {row.classname}); changed since the run? train it again"
            )


def write_fix(
    file: str | Path,
    source: DatasetSplits,
    samples: Sequence[Sample],
    result: AuditResult,
    labels: Sequence[str] | None = None,
) -> Path:
    """A label file for ``--dataset csv``: every row of ``source`` (the whole dataset the audited run trained on),
    in its order, the flagged training rows with the suggested label; columns ``path,label,split,given_label,
    changed`` (and ``true_label`` where ``source`` records a true label that differs or is unknown).

    ``samples`` are the audited samples, ``result``'s rows: exactly ``source``'s training rows
    (:func:`check_fix_source`). ``labels``: the class names as the source writes them (default: its class names).
    """
    check_fix_source(source, samples)
    names = tuple(labels) if labels is not None else source.classnames
    if len(names) != source.num_classes:
        raise ValueError(f"labels: expected {source.num_classes} names, got {len(names)}")
    fixed = {s.index: int(y) for s, f, y in zip(samples, result.flagged, result.suggested, strict=True) if f}
    rows = [(key, s) for key in ("train", "val", "test") for s in getattr(source, key)]
    truth = any(s.true_label != s.label for _, s in rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "split", "given_label", "changed", *["true_label"] * truth])
    for key, s in rows:
        label = fixed.get(s.index, s.label) if key == "train" else s.label
        true = [] if not truth else ["" if s.true_label is None else names[s.true_label]]
        w.writerow([os.path.abspath(s.path), names[label], key, names[s.label], int(label != s.label), *true])
    return atomic_write_text(file, buf.getvalue())


def class_summary(result: AuditResult, classnames: Sequence[str]) -> list[dict[str, Any]]:
    """Per given class: samples, flagged, the estimated error rate (flagged / samples)."""
    out = []
    for k, name in enumerate(classnames):
        mask = result.given == k
        n, f = int(mask.sum()), int((mask & result.flagged).sum())
        out.append({"class": name, "samples": n, "flagged": f, "rate": f / n if n else 0.0})
    return out


def confused_pairs(result: AuditResult, classnames: Sequence[str], top: int = 10) -> list[dict[str, Any]]:
    """The most frequent (given, suggested) pairs among flagged samples."""
    pairs = Counter(zip(result.given[result.flagged].tolist(), result.suggested[result.flagged].tolist(), strict=True))
    return [{"given": classnames[a], "suggested": classnames[b], "count": c} for (a, b), c in pairs.most_common(top)]


def _thumbnail(path: str, size: int) -> str:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except OSError as exc:
        log.warning("no thumbnail for %s (%s)", path, exc)
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_html(
    file: str | Path,
    samples: Sequence[Sample],
    result: AuditResult,
    classnames: Sequence[str],
    *,
    title: str = "visprompt audit",
    thumbnails: int = 500,
    thumb_size: int = 64,
) -> Path:
    """The self-contained report page (see the module docstring); ``thumbnails`` rows get an embedded image."""
    rows = _rows(samples, result, classnames)
    for r in rows[:thumbnails]:
        r["thumb"] = _thumbnail(r["path"], thumb_size)
    n, flagged = len(rows), int(result.flagged.sum())
    summary = sorted(class_summary(result, classnames), key=lambda c: -c["rate"])
    data = {"rows": rows, "classes": list(classnames)}
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")  # no "</script>" inside the JSON
    class_rows = "".join(
        f"<tr><td>{html.escape(c['class'])}</td><td>{c['samples']}</td><td>{c['flagged']}</td>"
        f"<td>{100 * c['rate']:.1f}%</td></tr>"
        for c in summary
    )
    pair_rows = (
        "".join(
            f"<tr><td>{html.escape(p['given'])}</td><td>{html.escape(p['suggested'])}</td><td>{p['count']}</td></tr>"
            for p in confused_pairs(result, classnames)
        )
        or "<tr><td colspan=3>none flagged</td></tr>"
    )
    page = _PAGE.format(
        title=html.escape(title), n=n, flagged=flagged, estimated=result.estimated_errors,
        rate=100 * result.estimated_errors / max(n, 1), class_rows=class_rows,
        pair_rows=pair_rows, payload=payload, script=_SCRIPT,
    )  # fmt: skip
    return atomic_write_text(file, page)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; }}
th[data-key] {{ cursor: pointer; background: #f3f3f3; user-select: none; }}
th.asc::after {{ content: " \\25B2"; }} th.desc::after {{ content: " \\25BC"; }}
tr.flagged td {{ background: #fff3f0; }}
.summary {{ display: flex; gap: 3em; flex-wrap: wrap; }}
.controls {{ margin: 1em 0; display: flex; gap: 1em; align-items: center; flex-wrap: wrap; }}
img {{ width: 48px; height: 48px; object-fit: cover; }}
</style></head><body>
<h1>{title}</h1>
<p>{n} samples, about <b>{estimated}</b> wrong labels (estimated error rate {rate:.1f}%); <b>{flagged}</b> flagged:
the highest-scored of the samples whose suggested label differs from the given one, no more than the estimate.
Score: 1 - the audit's probability of the given label (high = suspicious).</p>
<div class="summary">
<div><h2>Estimated error rate per class</h2><table id="per-class"><tr><th>class</th><th>samples</th><th>flagged</th>
<th>rate</th></tr>{class_rows}</table></div>
<div><h2>Most confused pairs</h2><table id="pairs"><tr><th>given</th><th>suggested</th><th>flagged</th></tr>
{pair_rows}</table></div>
</div>
<h2>Samples</h2>
<div class="controls">
<label>class <select id="filter-class"><option value="">all</option></select></label>
<label>given <select id="filter-given"><option value="">all</option></select></label>
<label>suggested <select id="filter-suggested"><option value="">all</option></select></label>
<label><input type="checkbox" id="flagged-only"> flagged only</label>
<span id="count"></span>
</div>
<table id="rows"><thead><tr>
<th data-key="rank">rank</th><th>image</th><th data-key="path">path</th><th data-key="given_label">given</th>
<th data-key="suggested_label">suggested</th><th data-key="confidence">confidence</th>
<th data-key="score">score</th><th data-key="flagged">flagged</th>
</tr></thead><tbody></tbody></table>
<script id="audit-data" type="application/json">{payload}</script>
<script>{script}</script>
</body></html>
"""

_SCRIPT = """
"use strict";
const DATA = JSON.parse(document.getElementById("audit-data").textContent);
const LIMIT = 2000;
const state = { key: "rank", dir: 1 };
for (const id of ["filter-class", "filter-given", "filter-suggested"]) {
  const sel = document.getElementById(id);
  for (const c of DATA.classes) {
    const o = document.createElement("option");
    o.value = c;
    o.textContent = c;
    sel.appendChild(o);
  }
  sel.addEventListener("change", render);
}
document.getElementById("flagged-only").addEventListener("change", render);
for (const th of document.querySelectorAll("th[data-key]")) {
  th.addEventListener("click", () => {
    const key = th.dataset.key;
    const high = key === "score" || key === "confidence" || key === "flagged";  // these start high-first
    state.dir = state.key === key ? -state.dir : (high ? -1 : 1);
    state.key = key;
    render();
  });
}
function cell(tr, text) {
  const td = document.createElement("td");
  td.textContent = text;
  tr.appendChild(td);
  return td;
}
function render() {
  const cls = document.getElementById("filter-class").value;
  const given = document.getElementById("filter-given").value;
  const sugg = document.getElementById("filter-suggested").value;
  const onlyFlagged = document.getElementById("flagged-only").checked;
  const rows = DATA.rows.filter(r => (!cls || r.given_label === cls || r.suggested_label === cls)
    && (!given || r.given_label === given) && (!sugg || r.suggested_label === sugg) && (!onlyFlagged || r.flagged));
  const k = state.key, d = state.dir;
  rows.sort((a, b) => (a[k] < b[k] ? -d : a[k] > b[k] ? d : a.rank - b.rank));
  for (const th of document.querySelectorAll("th[data-key]")) {
    th.classList.toggle("asc", th.dataset.key === k && d > 0);
    th.classList.toggle("desc", th.dataset.key === k && d < 0);
  }
  const body = document.querySelector("#rows tbody");
  body.replaceChildren();
  for (const r of rows.slice(0, LIMIT)) {
    const tr = document.createElement("tr");
    tr.dataset.rank = r.rank;
    if (r.flagged) tr.className = "flagged";
    cell(tr, r.rank);
    const td = cell(tr, "");
    if (r.thumb) { const img = document.createElement("img"); img.src = r.thumb; img.alt = ""; td.appendChild(img); }
    cell(tr, r.path); cell(tr, r.given_label); cell(tr, r.suggested_label);
    cell(tr, r.confidence.toFixed(3)); cell(tr, r.score.toFixed(3)); cell(tr, r.flagged ? "yes" : "");
    body.appendChild(tr);
  }
  document.getElementById("count").textContent = rows.length > LIMIT
    ? `showing ${LIMIT} of ${rows.length} matching rows (of ${DATA.rows.length})`
    : `${rows.length} of ${DATA.rows.length} rows`;
}
render();
"""
