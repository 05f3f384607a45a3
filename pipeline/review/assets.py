"""The review pages' style sheet and script, inlined in every page (no file beside it, no network).

The script is progressive: without it the page reads the same, links between a field's row and its
box jump (``#f3`` / ``#b3``) and ``:target`` highlights the one jumped to.  With it, hovering a row
or a box highlights both, and clicking a row scrolls its box into view.  The Content-Security-Policy
of each page allows this script (by hash), inline styles and ``data:`` images, and nothing else: no
request leaves the page, and no script that came in with a document's text would run even if it
were not escaped (it is: every string from the data goes through ``html.escape``).
"""

from __future__ import annotations

import base64
import hashlib

FLAG_COLOUR = "#cf222e"  # boxes and rows of flagged fields
BOX_COLOUR = "#0969da"  # boxes of the other fields
HIGHLIGHT_COLOUR = "#bf8700"  # a box or row hovered, clicked or jumped to

CSS = f"""
*{{box-sizing:border-box}}
body{{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}}
a{{color:#0969da}}
header{{padding:12px 20px;background:#fff;border-bottom:1px solid #d0d7de}}
header h1{{font-size:18px;margin:4px 0;word-break:break-all}}
nav a{{margin-right:14px}}
html.no-js .keys{{display:none}}
main{{padding:12px 20px}}
.muted{{color:#59636e}}
.counts span{{display:inline-block;margin-right:18px;font-size:15px}}
.counts b{{font-size:20px}}
dl.meta{{display:flex;flex-wrap:wrap;gap:2px 18px;margin:6px 0 0;font-size:12.5px}}
dl.meta div{{display:flex;gap:6px}}
dl.meta dt{{color:#59636e}}
dl.meta dd{{margin:0;word-break:break-all}}
.badge{{display:inline-block;white-space:nowrap;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}}
.badge.failed{{background:#6e7781}}
.badge.flagged{{background:{FLAG_COLOUR}}}
.badge.ok{{background:#1a7f37}}
table{{border-collapse:collapse;background:#fff;width:100%}}
th,td{{border-bottom:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}}
th{{background:#f6f8fa;position:sticky;top:0;z-index:1}}
table.fields{{font-size:13px}}
table.fields td:first-child{{word-break:break-all;width:34%}}
td.value{{word-break:break-word;width:40%}}
td.num{{text-align:right;font-variant-numeric:tabular-nums}}
.null{{color:#8c959f;font-style:italic}}
tr.flagged td{{background:#ffebe9}}
tr.flagged td:first-child{{border-left:4px solid {FLAG_COLOUR}}}
tr.hl td,tr.sel td,tr:target td{{background:#fff8c5}}
.reason{{color:{FLAG_COLOUR};font-size:12px}}
.layout{{display:grid;grid-template-columns:minmax(0,1.25fr) minmax(420px,1fr);gap:16px;align-items:start}}
.pages figure{{margin:0 0 16px}}
.pages figcaption{{font-size:12px;color:#59636e}}
.sheet{{position:relative;display:inline-block;max-width:100%;border:1px solid #d0d7de;line-height:0}}
.sheet img{{display:block;max-width:100%;height:auto}}
.box{{position:absolute;border:2px solid {BOX_COLOUR};background:rgba(9,105,218,.10)}}
.box.flagged{{border-color:{FLAG_COLOUR};background:rgba(207,34,46,.14)}}
.box.ungrounded{{border-style:dashed}}
.box.hl,.box.sel,.box:target{{outline:3px solid {HIGHLIGHT_COLOUR};background:rgba(191,135,0,.28)}}
aside{{position:sticky;top:0;max-height:100vh;overflow:auto}}
.flags ul{{columns:16em;margin:4px 0;padding-left:18px;max-height:11em;overflow:auto;font-size:13px}}
.flags a{{color:{FLAG_COLOUR}}}
.note{{padding:8px 12px;background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;margin:8px 0}}
.flags{{padding:8px 12px;background:#ffebe9;border:1px solid {FLAG_COLOUR};border-radius:6px;margin:8px 0}}
.failure{{padding:8px 12px;background:#fff;border:1px solid #6e7781;border-radius:6px;margin:8px 0}}
pre{{white-space:pre-wrap;word-break:break-all;background:#f6f8fa;padding:8px;max-height:40em;overflow:auto}}
@media (max-width:900px){{.layout{{grid-template-columns:1fr}}aside{{position:static;max-height:none}}}}
"""

# Hover a row or a box: both light up.  Click a row: its box scrolls into view and stays lit.
# Keys n / p / i: the next or previous document of the index, or the index (the links in <nav>).
SCRIPT = """
(function () {
  var d = document, root = d.documentElement;
  root.className = root.className.replace('no-js', 'js');
  var marked = d.querySelectorAll('[data-field]');
  function each(field, fn) {
    for (var i = 0; i < marked.length; i++) { if (marked[i].getAttribute('data-field') === field) fn(marked[i]); }
  }
  function clearSel() {
    var s = d.querySelectorAll('.sel');
    for (var i = 0; i < s.length; i++) s[i].classList.remove('sel');
  }
  for (var i = 0; i < marked.length; i++) {
    (function (el) {
      var field = el.getAttribute('data-field');
      el.addEventListener('mouseenter', function () { each(field, function (e) { e.classList.add('hl'); }); });
      el.addEventListener('mouseleave', function () { each(field, function (e) { e.classList.remove('hl'); }); });
      if (el.tagName === 'TR') {
        el.addEventListener('click', function () {
          clearSel();
          each(field, function (e) { e.classList.add('sel'); });
          var box = d.getElementById('b' + el.id.slice(1));
          if (box) box.scrollIntoView({block: 'center', behavior: 'smooth'});
        });
      }
    })(marked[i]);
  }
  var keys = {n: 'next', p: 'prev', i: 'index'};
  d.addEventListener('keydown', function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || !keys[ev.key]) return;
    var link = d.querySelector('nav a[rel="' + keys[ev.key] + '"]');
    if (link) window.location.href = link.href;
  });
})();
"""


def script_hash(script: str) -> str:
    """The CSP source allowing exactly ``script`` (the text between its tags)."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def csp(script: str | None) -> str:
    scripts = script_hash(script) if script is not None else "'none'"
    return (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {scripts}; "
            "base-uri 'none'; form-action 'none'")
