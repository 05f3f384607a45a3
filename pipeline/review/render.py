"""HTML of the review: an index page and one page per document, each complete in itself.

Every string that comes from the data (values, paths, messages, raw model output, reasons) goes
through :func:`esc`; ids, classes and styles are made here from numbers and fixed words only.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.review.assets import CSS, SCRIPT, csp
from pipeline.review.data import DocView, FieldRow, Review
from pipeline.review.images import PageImages

GENERATOR = "docextract review"
STATUS_LABEL = {"failed": "failed", "flagged": "needs review", "ok": "ok"}


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def doc_file(doc_id: str) -> str:
    """The file name of a document's page (``docs/<name>``): its id with anything but [A-Za-z0-9_-] replaced."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", doc_id)[:100] + ".html"


def _page(title: str, body: str, script: str | None) -> str:
    js = f"<script>{script}</script>" if script is not None else ""
    return (
        '<!DOCTYPE html>\n<html lang="en" class="no-js"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp(script))}">'
        f'<meta name="generator" content="{GENERATOR}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n{js}</body></html>\n"
    )


def _badge(status: str) -> str:
    return f'<span class="badge {status}">{STATUS_LABEL[status]}</span>'


def _name(path: str) -> str:
    return re.split(r"[\\/]", path)[-1] or path


# --------------------------------------------------------------------------- index


@dataclass
class IndexInfo:
    out_dir: str
    generated_at: str
    only_flagged: bool


def _issues(doc: DocView, limit: int = 3) -> str:
    if doc.failure is not None:
        f = doc.failure
        msg = f.message if len(f.message) <= 240 else f.message[:240] + "…"
        return f"<b>{esc(f.stage)} / {esc(f.error_type)}</b>: {esc(msg)}"
    items = [f'<div class="reason">{esc(r)}</div>' for r in doc.reasons[:limit]]
    if len(doc.reasons) > limit:
        items.append(f'<div class="muted">and {len(doc.reasons) - limit} more</div>')
    return "".join(items)


def _index_row(doc: DocView) -> str:
    pages = doc.pages_used if doc.pages_used is not None else doc.page_count
    return (
        f'<tr class="{doc.status}"><td>{_badge(doc.status)}</td>'
        f'<td><a href="docs/{doc_file(doc.doc_id)}">{esc(_name(doc.source_path))}</a>'
        f'<div class="muted">{esc(doc.source_path)}</div></td>'
        f"<td>{esc(doc.schema_name)}</td><td class=\"num\">{esc(pages)}</td><td>{_issues(doc)}</td>"
        f'<td class="muted">{esc(doc.when)}</td></tr>'
    )


def index_html(review: Review, info: IndexInfo) -> str:
    notes = []
    if not review.has_flags:
        notes.append("These results carry no review flags (an output written before needs_review existed): "
                     "nothing is marked for review.")
    notes += [f"evidence part left out (its boxes are missing): {s}" for s in review.skipped]
    if not review.has_evidence:
        notes.append("This output has no evidence table: values are shown without boxes on the pages.")
    shown = "flagged results and failures only (--only-flagged)" if info.only_flagged else "every document"
    rows = "\n".join(_index_row(d) for d in review.docs) or '<tr><td colspan="6">nothing to show</td></tr>'
    body = f"""<header><h1>docextract review</h1>
<div class="muted">output {esc(info.out_dir)} · generated {esc(info.generated_at)} · showing {shown}</div></header>
<main>
<div class="counts"><span><b>{review.total}</b> documents</span><span><b>{review.flagged}</b> flagged</span>
<span><b>{review.failed}</b> failed</span><span><b>{review.total - review.flagged - review.failed}</b> ok</span></div>
{"".join(f'<div class="note">{esc(n)}</div>' for n in notes)}
<table class="index"><thead><tr><th>status</th><th>document</th><th>schema</th><th>pages</th><th>issues</th>
<th>when</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</main>"""
    return _page(f"docextract review: {info.out_dir}", body, None)


# --------------------------------------------------------------------------- document


def _pct(v: float) -> str:
    return f"{v * 100:.3f}%"


def _boxes(fields: list[FieldRow], page: int) -> str:
    out = []
    for i, f in enumerate(fields):
        if f.box is None or f.page != page:
            continue
        x0, y0, x1, y1 = f.box
        cls = "box" + (" flagged" if f.flagged else "") + (" ungrounded" if f.grounded is False else "")
        style = f"left:{_pct(x0)};top:{_pct(y0)};width:{_pct(x1 - x0)};height:{_pct(y1 - y0)}"
        title = f"{f.path} = {f.value if f.value is not None else 'null'}"
        out.append(f'<a class="{cls}" id="b{i}" href="#f{i}" data-field="{esc(f.path)}" style="{style}" '
                   f'title="{esc(title)}"></a>')
    return "".join(out)


def _pages(doc: DocView, images: PageImages) -> str:
    parts = []
    if images.note:
        parts.append(f'<div class="note">{esc(images.note)}</div>')
    for n, (uri, (w, h)) in enumerate(zip(images.uris, images.sizes, strict=True), start=1):
        parts.append(
            f'<figure id="page{n}"><div class="sheet"><img src="{uri}" width="{w}" height="{h}" '
            f'alt="page {n} of {esc(_name(doc.source_path))}">{_boxes(doc.fields, n)}</div>'
            f"<figcaption>page {n}</figcaption></figure>"
        )
    beyond = sorted({f.page for f in doc.fields if f.box is not None and f.page is not None and f.page > len(images.uris)})
    if images.uris and beyond:
        parts.append(f'<div class="note">evidence on page(s) {", ".join(map(str, beyond))}, not rendered</div>')
    return "\n".join(parts)


def _grounded(f: FieldRow) -> str:
    if f.grounded is None:
        return '<span class="null">–</span>'
    if not f.grounded:
        return "no"
    return "yes" + (f'<div class="muted">{esc(f.source.replace("_", " "))}</div>' if f.source else "")


def _field_row(i: int, f: FieldRow, drawn: int) -> str:
    value = '<span class="null">not stated</span>' if f.value is None else esc(f.value)
    reasons = "".join(f'<div class="reason">{esc(r.partition(": ")[2] or r)}</div>' for r in f.reasons)
    name = esc(f.path)
    if f.box is not None and f.page is not None and f.page <= drawn:  # its box is on a page shown
        name = f'<a href="#b{i}">{name}</a>'
    conf = "" if f.confidence is None else f"{f.confidence:.2f}"
    page = "" if f.page is None else str(f.page)
    cls = ' class="flagged"' if f.flagged else ""
    return (f'<tr id="f{i}"{cls} data-field="{esc(f.path)}"><td>{name}</td><td class="value">{value}{reasons}</td>'
            f'<td class="num">{conf}</td><td>{_grounded(f)}</td><td class="num">{page}</td></tr>')


def _fields_table(doc: DocView, drawn: int) -> str:
    rows = "\n".join(_field_row(i, f, drawn) for i, f in enumerate(doc.fields))
    return (f'<table class="fields"><thead><tr><th>field</th><th>value</th><th>conf.</th>'
            f"<th>grounded</th><th>page</th></tr></thead><tbody>\n{rows}\n</tbody></table>")


def _meta(doc: DocView) -> str:
    pages = doc.page_count if doc.pages_used in (None, doc.page_count) else f"{doc.pages_used} of {doc.page_count} sent"
    items = [("path", doc.source_path), ("schema", doc.schema_name), ("model", doc.model), ("run", doc.run_id),
             ("run key", doc.run_key), ("when", doc.when), ("kind", doc.doc_kind), ("pages", pages),
             ("doc id", doc.doc_id)]
    return '<dl class="meta">' + "".join(f"<div><dt>{k}</dt> <dd>{esc(v)}</dd></div>" for k, v in items) + "</dl>"


def _list(title: str, cls: str, items: Iterable[str]) -> str:
    lis = "".join(f"<li>{esc(i)}</li>" for i in items)
    return f'<div class="{cls}"><b>{title}</b><ul>{lis}</ul></div>' if lis else ""


def _flags(doc: DocView) -> str:
    """The review reasons, each linked to the first row of the field it names."""
    if not doc.reasons:
        return ""
    first: dict[str, int] = {}
    for i, f in enumerate(doc.fields):
        for r in f.reasons:
            first.setdefault(r, i)
    lis = "".join(f'<li><a href="#f{first[r]}">{esc(r)}</a></li>' if r in first else f"<li>{esc(r)}</li>"
                  for r in dict.fromkeys(doc.reasons))
    n = len(doc.reasons)
    return f'<div class="flags"><b>Needs review: {n} reason{"s" if n != 1 else ""}</b><ul>{lis}</ul></div>'


def _failure(doc: DocView) -> str:
    f = doc.failure
    if f is None:
        return ""
    retry = "" if f.retryable is None else (" (retryable: the next run tries again)" if f.retryable else "")
    errors = "".join(f"<li>{esc(e)}</li>" for e in f.errors)
    raw = (f"<details><summary>raw model output ({len(f.raw_output):,} characters)</summary>"
           f"<pre>{esc(f.raw_output)}</pre></details>") if f.raw_output else ""
    return (f'<div class="failure"><b>failed at {esc(f.stage)}: {esc(f.error_type)}</b>{esc(retry)}'
            f"<p>{esc(f.message)}</p>{f'<ul>{errors}</ul>' if errors else ''}{raw}</div>")


@dataclass
class Neighbours:
    prev: DocView | None
    next: DocView | None


def _nav(n: Neighbours) -> str:
    links = ['<a href="../index.html" rel="index">index</a>']
    if n.prev is not None:
        links.append(f'<a href="{doc_file(n.prev.doc_id)}" rel="prev">← {esc(_name(n.prev.source_path))}</a>')
    if n.next is not None:
        links.append(f'<a href="{doc_file(n.next.doc_id)}" rel="next">{esc(_name(n.next.source_path))} →</a>')
    links.append('<span class="muted keys">keys: n next, p previous, i index</span>')
    return "<nav>" + "".join(links) + "</nav>"


def doc_html(doc: DocView, images: PageImages, nav: Neighbours) -> str:
    table = _fields_table(doc, len(images.uris)) if doc.fields else ""
    aside = f"{_failure(doc)}{_flags(doc)}{_list('Warnings', 'note', doc.warnings)}{table}"
    body = f"""<header>{_nav(nav)}<h1>{esc(_name(doc.source_path))} {_badge(doc.status)}</h1>{_meta(doc)}</header>
<main><div class="layout"><div class="pages">{_pages(doc, images)}</div>
<aside>{aside}</aside></div></main>"""
    return _page(f"{_name(doc.source_path)}: docextract review", body, SCRIPT)
