"""One way to render our HTML pages: Jinja2 with autoescape, data as JSON, one stylesheet.

Both static pages (``kerascls-edge report``'s review page and ``kerascls evaluate``'s
``report.html``) are rendered here. Before this, each page replaced ``%PLACEHOLDER%`` strings
in a chain, so a value's text (a class named ``%DATA%``) became the next placeholder and a
file name ran as script. Now:

* every ``{{ value }}`` in a template is HTML-escaped unless it is :class:`markupsafe.Markup`;
* data for the page's script is one JSON document per ``<script type="application/json">``
  (:func:`json_for_script`: ``<``, ``>``, ``&`` and U+2028/9 as ``\\uXXXX``, so no value can
  end the element or open a comment), which the script reads with
  ``JSON.parse(element.textContent)``;
* the page scripts build their DOM with ``textContent``/``setAttribute``, never ``innerHTML``
  of data.

Templates are Python strings (no package data to declare); pages extend :data:`BASE`.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any

from jinja2 import DictLoader, Environment, StrictUndefined, Template
from markupsafe import Markup

#: Shared by both pages (and small: the pages must open from a USB stick on a slow laptop).
STYLESHEET = Markup("""
body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f2;color:#222}
header{background:#2d4a3e;color:#fff;padding:10px 16px}
header h1{font-size:18px;margin:0 0 4px}
section{padding:6px 16px}
h2{font-size:16px;margin:12px 0 6px}
table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:right}
.grid{display:flex;flex-wrap:wrap;gap:8px}
.card{background:#fff;border:1px solid #ccc;font-size:12px;padding:4px;word-break:break-all}
.card.seq{border-left:4px solid #c80}
.file{word-break:break-all;color:#555}
.conf{font-weight:bold}
.noimg{background:#eee;margin:auto}
.error{color:#a00;font-weight:bold}
#controls{padding:8px 16px;background:#fff;border-bottom:1px solid #ccc;position:sticky;top:0}
#controls label{margin-right:14px}
#summary{padding:6px 16px;font-size:14px}
#gallery .grid{padding:0 16px}
#gallery h2{margin:14px 16px 6px}
#gallery .card{width:168px}
.tw{position:relative;background:#ddd;overflow:hidden;margin:auto}
.tw img{width:100%;height:100%;display:block}
.box{position:absolute;border:2px solid #f30}
#pager,#ppager{padding:12px 16px}
#pager a,#ppager a{margin:0 3px}
#problems td{text-align:left;padding:2px 8px;border:0;border-bottom:1px solid #ddd}
#matrix th.row{text-align:left}
#matrix td a{display:block;color:inherit;text-decoration:none;min-width:28px}
#matrix td.diag{background:#d8ecd8}
#matrix td.off{background:#f6dede}
#matrix td.zero{background:#fff;color:#aaa}
#matrix td.sel{outline:3px solid #f60}
.eval .card{width:104px;font-size:11px;padding:3px}
.eval .card img{display:block;max-width:96px;max-height:96px;margin:auto}
.eval .noimg{width:96px;height:24px}
.cols{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
#reliability img{max-width:420px;border:1px solid #ccc;background:#fff}
""")

#: The page frame. `generator` is what `kerascls-edge report` looks for before it replaces a
#: page; `data` maps element ids to objects embedded as JSON.
BASE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="{{ generator }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>{{ stylesheet }}</style>
</head><body class="{{ body_class }}">
<header><h1 id="title">{{ title }}</h1>{% block header %}{% endblock %}</header>
{% block body %}{% endblock %}
{% for element_id, value in data.items() -%}
<script type="application/json" id="{{ element_id }}">{{ value | script_json }}</script>
{% endfor -%}
<script>
"use strict";
{% block script %}{% endblock %}
</script></body></html>
"""

#: DOM helpers every page script starts with: elements are built, never parsed from strings.
DOM_JS = """
const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}
function jsonOf(id) {
  const e = $(id);
  return e ? JSON.parse(e.textContent) : null;
}
"""


def _finite(value: Any) -> Any:
    """NaN/Infinity are not JSON (JSON.parse would refuse the page): written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_for_script(obj: Any) -> Markup:
    """`obj` as JSON that is inert inside a ``<script>`` element (or a .js file).

    ``ensure_ascii`` writes every non-ASCII character (U+2028/9 too, and lone surrogates from
    undecodable file names) as ``\\uXXXX``; ``<``, ``>`` and ``&`` are escaped the same way,
    so ``</script>`` or ``<!--`` cannot appear in the output whatever the data holds.
    """
    try:
        text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(obj), ensure_ascii=True, separators=(",", ":"),
                          allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)


@functools.lru_cache(maxsize=1)
def environment() -> Environment:
    """The one Jinja2 environment: autoescape on for every template, undefined is an error."""
    env = Environment(loader=DictLoader({"base.html": BASE}), autoescape=True,
                      undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["script_json"] = json_for_script
    env.globals.update(stylesheet=STYLESHEET, dom_js=Markup(DOM_JS))
    return env


@functools.lru_cache(maxsize=8)
def _template(source: str) -> Template:
    return environment().from_string(source)


def render(source: str, **context: Any) -> str:
    """Render a page template (one that ``{% extends "base.html" %}``) with `context`."""
    context.setdefault("body_class", "")
    context.setdefault("data", {})
    return _template(source).render(**context)
