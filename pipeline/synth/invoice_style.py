"""An invoice's look (layout, font, accent colour, page size, columns), drawn at random per document."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.synth.invoice_data import InvCtx
from pipeline.synth.tables import load

ACCENTS: list[tuple[float, float, float]] = [(r, g, b) for r, g, b in load("style.json")["accents"]]


@dataclass
class InvStyle:
    layout: str  # classic | band | letter
    family: str
    cjk: bool
    accent: tuple
    size: float
    pw: float
    ph: float
    margin: float
    pos_col: bool
    unit_col: bool
    logo: str
    carry: bool
    page_numbers: bool
    show_paid: bool



def _invoice_style(rng: random.Random, ctx: InvCtx) -> InvStyle:
    cjk = ctx.loc.lang == "zh"
    layout = rng.choice(["classic", "band", "letter"])
    family = "cjk" if cjk else rng.choices(["helv", "tiro", "cour"], weights=[6, 3, 1])[0]
    pw, ph = (612, 792) if ctx.loc.letter else (595, 842)
    return InvStyle(
        layout=layout, family=family, cjk=cjk, accent=rng.choice(ACCENTS),
        size=rng.choice([8.5, 9, 9, 9.5, 10]) if family != "cour" else 8.5,
        pw=pw, ph=ph, margin=rng.choice([40, 45, 50, 56]), pos_col=rng.random() < 0.5,
        unit_col=rng.random() < 0.45, logo=rng.choice(["circle", "squares", "triangle", "hexagon", "bars"]),
        carry=layout == "letter" and rng.random() < 0.7, page_numbers=rng.random() < 0.5,
        show_paid=ctx.loc.code in ("en-US", "en-GB") and rng.random() < 0.2,
    )
