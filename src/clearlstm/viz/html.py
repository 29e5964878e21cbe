"""The HTML pieces every clearlstm report is made of: escaping, number cells with their
full-precision value in ``data-v``, tables, embedded figures and the page style."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence

from clearlstm.viz import figures

IMAGE_FORMATS = ("svg", "png")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: .85rem; }
th, td { border: 1px solid #ddd; padding: .2rem .45rem; }
td { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f6; } td.text { text-align: left; }
figure { margin: 1rem 0; } figure svg, figure img { max-width: 100%; height: auto; }
.glance { display: flex; gap: 1rem; flex-wrap: wrap; margin: 1rem 0; }
.glance div { background: #f4f4f6; border-radius: 6px; padding: .5rem .9rem; }
.glance strong { display: block; font-size: 1.3rem; font-variant-numeric: tabular-nums; }
figcaption { color: #555; font-size: .85rem; }
.note { background: #fff8e1; border-left: 4px solid #f0c000; padding: .4rem .8rem; }
.sentences li { margin: .15rem 0; } footer { color: #777; font-size: .8rem; margin-top: 3rem; }
.chars { font-family: ui-monospace, monospace; font-size: .8rem; white-space: pre-wrap;
         line-height: 1.6; border: 1px solid #ddd; padding: .4rem; }
.beats { color: #1a7f37; font-weight: 600; } .chance { color: #8a6d00; }
"""


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def cell(value: float) -> str:
    """A table cell: six decimals shown, the full value in ``data-v``."""
    value = float(value)
    if math.isnan(value):
        return '<td data-v="nan">—</td>'
    shown = f"{value:.6f}" if abs(value) >= 1e-4 or value == 0 else f"{value:.6g}"
    return f'<td data-v="{value!r}">{shown}</td>'


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, table_id: str | None = None
) -> str:
    """``rows`` hold ready-made ``<td>`` cells."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(f"<tr>{''.join(cells)}</tr>" for cells in rows)
    ident = f' id="{escape(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Figures:
    """Embeds figures one after another; SVG ids get a per-figure prefix so they never clash."""

    def __init__(self, image_format: str) -> None:
        if image_format not in IMAGE_FORMATS:
            raise ValueError(
                f"report: image format must be one of {IMAGE_FORMATS}; got {image_format!r}"
            )
        self.image_format = image_format
        self.count = 0

    def embed(self, fig, caption: str) -> str:
        self.count += 1
        if self.image_format == "svg":
            prefix = f"f{self.count}-"
            svg = figures.figure_svg(fig)
            body = re.sub(r'(\bid="|href="#|url\(#)', lambda m: m.group(1) + prefix, svg)
        else:
            data = figures.figure_png_base64(fig)
            body = f'<img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
        fig.clear()  # free the memory of large figures early
        return f'<figure class="figure">{body}<figcaption>{escape(caption)}</figcaption></figure>'
