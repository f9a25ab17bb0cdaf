"""A session record as a printable page: A4, attendance first, then one page per slide."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from typing import Any

_CSS = """
body{font:13px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:960px;margin:2em auto;color:#111}
h1{font-size:22px;margin:0 0 .2em}h2{font-size:18px;margin:0 0 .4em}h3{font-size:14px;margin:1em 0 .3em}
table{border-collapse:collapse;width:100%;margin:.3em 0 1em}
th,td{border-bottom:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{font-weight:600;background:#f4f4f4}
.meta{color:#444}.muted{color:#777}.swatch{display:inline-block;width:.9em;height:.9em;border:1px solid #0005;
vertical-align:-.1em;margin-right:.3em}
.slide{page-break-before:always;break-before:page}
.slide img{max-width:100%;max-height:120mm;display:block;margin:.5em 0;border:1px solid #ccc}
.comments{margin:.2em 0 0 1em;padding:0;list-style:none}.comments li{margin:.1em 0}
@page{size:A4;margin:15mm}
@media print{body{margin:0;max-width:none}a{color:inherit;text-decoration:none}
tr,li,.annotation{break-inside:avoid;page-break-inside:avoid}}
"""


def _local(value: str | None) -> str:
    """An ISO 8601 time as 'YYYY-MM-DD HH:MM'."""
    return "" if not value else value[:16].replace("T", " ")


def _measure(a: Mapping[str, Any]) -> str:
    if isinstance(a.get("area_um2"), int | float):
        return f"{a['area_um2']:,.0f} µm²"
    if isinstance(a.get("length_um"), int | float):
        return f"{a['length_um']:,.1f} µm"
    return ""


def _who(p: Mapping[str, Any] | None) -> str:
    if not p:
        return "unknown"
    name, site = str(p["name"]), p.get("site")
    # Names often carry their site already: "Dr Leroy (Mouscron)".
    return f"{name} ({site})" if site and site not in name else name


def record_html(record: Mapping[str, Any], images: Mapping[str, bytes] | None = None) -> str:
    """A printable page (A4, one page per slide); `images` (slide id -> PNG) are embedded."""
    e = html.escape
    tz = record["time_zone"]
    end = _local(record["end"]) if record["end"] else "still in progress"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Tumor board: {e(record['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Tumor board: {e(record['title'])}</h1>",
        f"<p class='meta'>Led by {e(_who(record['led_by']))}. From {e(_local(record['start']))} to {e(end)} "
        f"(times in {e(tz)}).</p>",
        "<h3>Attendance</h3>",
    ]
    if record["attendees"]:
        parts.append("<table><tr><th>Name</th><th>Site</th><th>Role</th><th>Joined</th><th>Left</th></tr>")
        for p in record["attendees"]:
            left = _local(p["left"]) if p["left"] else "still connected"
            parts.append(
                f"<tr><td>{e(p['name'])}</td><td>{e(p['site'])}</td><td>{e(p['role'])}</td>"
                f"<td>{e(_local(p['joined']))}</td><td>{e(left)}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p class='muted'>No one joined the session room.</p>")
    parts.append("<h3>Presenters</h3><ul>")
    for p in record["presenters"]:
        until = f" to {_local(p['until'])}" if p["until"] else ""
        parts.append(f"<li>{e(_who(p))}: from {e(_local(p['from']))}{e(until)}</li>")
    parts.append("</ul>")
    for slide in record["slides"]:
        parts.append(f"<section class='slide'><h2>{e(slide['title'])}</h2>")
        if slide.get("shown_at"):
            times = ", ".join(_local(t)[11:] for t in slide["shown_at"])
            parts.append(f"<p class='meta'>On screen at {e(times)}.</p>")
        png = (images or {}).get(slide["slide"])
        if png is not None:
            data = base64.b64encode(png).decode("ascii")
            parts.append(f"<img alt='{e(slide['title'])} with its annotations' src='data:image/png;base64,{data}'>")
        if not slide["annotations"]:
            parts.append("<p class='muted'>No annotation was shown, made or changed.</p></section>")
            continue
        parts.append(
            "<table><tr><th>Annotation</th><th>Class</th><th>Size</th><th>Drawn by</th><th>What happened</th></tr>"
        )
        for a in slide["annotations"]:
            swatch = f"<span class='swatch' style='background:{e(a['color'])}'></span>"
            events = [
                f"{_local(h['at'])[11:]} {_who(h)} {h['words']}" for h in a["history"]
            ] + [f"{_local(x['at'])[11:]} shown by {_who(x['by'])}" for x in a["shown"]]
            label = e(a["label"]) + (" <span class='muted'>(deleted)</span>" if a["deleted"] else "")
            parts.append(
                f"<tr class='annotation'><td>{label}</td><td>{swatch}{e(a['class'] or 'none')}</td>"
                f"<td>{e(_measure(a))}</td><td>{e(_who(a['author']))}</td>"
                f"<td>{'<br>'.join(e(x) for x in events)}"
            )
            if a["comments"]:
                parts.append("<ul class='comments'>")
                for c in a["comments"]:
                    when = _local(c["at"])[11:] if c["at"] else ""
                    parts.append(f"<li><strong>{e(c['name'])}</strong> <span class='muted'>{e(when)}</span>: "
                                 f"{e(c['text'])}</li>")
                parts.append("</ul>")
            parts.append("</td></tr>")
        parts.append("</table></section>")
    parts.append("</body></html>")
    return "".join(parts)


