"""Vendors, customers and merchants: people, companies, addresses, tax ids, phones, bank details."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping

from pipeline.synth.formats import Loc
from pipeline.synth.tables import load

_PARTY_DATA = load("parties.json")
NAME_PARTS: dict[str, dict[str, list]] = _PARTY_DATA["names"]
CITIES: dict[str, list[list[str]]] = _PARTY_DATA["cities"]
TRANSLIT = str.maketrans(_PARTY_DATA["transliteration"])
_IBAN: dict[str, list] = _PARTY_DATA["iban"]  # locale -> [country code, digits after the check digits]
_CN_BANKS: list[str] = _PARTY_DATA["cn_banks"]


def _pick(rng: random.Random, weights: Mapping[str, float]) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _slug(s: str) -> str:
    s = s.lower().translate(TRANSLIT)
    return "-".join(w for w in "".join(c if c.isalnum() else " " for c in s).split() if w.isascii())[:30] or "info"


def _person(rng: random.Random, lang: str) -> str:
    p = NAME_PARTS[lang]
    if lang == "zh":
        return rng.choice(p["last"]) + rng.choice(p["first"]) + (rng.choice(p["first"]) if rng.random() < 0.5 else "")
    return f"{rng.choice(p['first'])} {rng.choice(p['last'])}"


def _company(rng: random.Random, loc: Loc) -> tuple[str, str]:
    """(name, ascii slug for emails/websites)."""
    lang = loc.lang
    p = NAME_PARTS[lang]
    if lang == "zh":
        w, py = rng.choice(p["word"])
        city = rng.choice(CITIES["zh-CN"])[0].rstrip("市")
        name = f"{city}{w}{rng.choice(p['trade'])}有限公司"
        return name, py
    if lang == "en":
        suffix = rng.choice(p["suffix_US"] if loc.code == "en-US" else p["suffix_GB"])
        if rng.random() < 0.3:
            base = f"{rng.choice(p['last'])} & {rng.choice(p['last'])}"
        else:
            base = f"{rng.choice(p['word'])} {rng.choice(p['trade'])}"
        name = f"{base} {suffix}"
        return name, _slug(base)
    if lang == "de":
        r = rng.random()
        if r < 0.35:
            base = f"{rng.choice(p['last'])} {rng.choice(p['trade'])}"
        elif r < 0.6:
            base = f"{rng.choice(p['last'])} & {rng.choice(p['last'])}"
        else:
            base = f"{rng.choice(p['word'])} {rng.choice(p['trade'])}"
        return f"{base} {rng.choice(p['suffix'])}", _slug(base)
    r = rng.random()
    if r < 0.5:
        base = f"{rng.choice(p['word'])} {rng.choice(p['last'])}"
    else:
        base = f"{rng.choice(p['trade'])} {rng.choice(p['last'])}"
    return f"{base} {rng.choice(p['suffix'])}", _slug(base)


def _address(rng: random.Random, loc: Loc, country: bool = False) -> list[str]:
    p = NAME_PARTS[loc.lang]
    city = rng.choice(CITIES[loc.code])
    n = rng.randint(1, 240)
    if loc.code == "en-US":
        street = f"{rng.randint(10, 9999)} {rng.choice(p['streets'])}"
        lines = [street + (f", Suite {rng.randint(100, 950)}" if rng.random() < 0.3 else ""),
                 f"{city[0]}, {city[1]} {city[2]}{_digits(rng, 2)}"]
    elif loc.code == "en-GB":
        pc = f"{city[1]} {rng.randint(1, 9)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
        lines = [f"{n} {rng.choice(p['streets'])}", f"{city[0]} {pc}"]
    elif loc.code in ("de-DE", "de-CH"):
        pc = city[1] + _digits(rng, (5 if loc.code == "de-DE" else 4) - len(city[1]))
        lines = [f"{rng.choice(p['streets'])} {n}", f"{pc} {city[0]}"]
        if loc.code == "de-CH":
            lines[0] = lines[0].replace("straße", "strasse")
    elif loc.code == "fr-FR":
        pc = city[1] + _digits(rng, 5 - len(city[1]))
        lines = [f"{n}{rng.choice(['', '', ' bis'])} {rng.choice(p['streets'])}", f"{pc} {city[0]}"]
    else:
        street = f"{city[0]}{city[1]}{rng.choice(p['streets'])}{n}号"
        return [street + (f"{rng.randint(2, 30)}楼" if rng.random() < 0.5 else "")]
    if country:
        lines.append(loc.country)
    return lines


def _tax_id(rng: random.Random, loc: Loc) -> str:
    c = loc.code
    if c == "en-US":
        return f"{rng.randint(10, 99)}-{_digits(rng, 7)}"
    if c == "en-GB":
        return "GB" + _digits(rng, 9)
    if c == "de-DE":
        return "DE" + str(rng.randint(1, 9)) + _digits(rng, 8)
    if c == "de-CH":
        return f"CHE-{_digits(rng, 3)}.{_digits(rng, 3)}.{_digits(rng, 3)} MWST"
    if c == "fr-FR":
        return "FR" + _digits(rng, 2) + str(rng.randint(1, 9)) + _digits(rng, 8)
    alnum = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    return "91" + _digits(rng, 6) + "".join(rng.choice(alnum) for _ in range(10))


def _phone(rng: random.Random, loc: Loc) -> str:
    c = loc.code
    if c == "en-US":
        return f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{_digits(rng, 4)}"
    if c == "en-GB":
        return f"0{rng.randint(20, 199)} {_digits(rng, 3)} {_digits(rng, 4)}"
    if c == "de-DE":
        return f"0{rng.randint(30, 899)} {_digits(rng, 6)}"
    if c == "de-CH":
        return f"0{rng.randint(21, 91)} {_digits(rng, 3)} {_digits(rng, 2)} {_digits(rng, 2)}"
    if c == "fr-FR":
        return "0" + str(rng.randint(1, 5)) + " " + " ".join(_digits(rng, 2) for _ in range(4))
    return f"0{rng.randint(10, 29)}-{_digits(rng, 8)}"


def _bank(rng: random.Random, loc: Loc) -> str:
    c = loc.code
    if c in _IBAN:
        cc, n = _IBAN[c]
        raw = cc + _digits(rng, 2) + _digits(rng, n)
        iban = " ".join(raw[i:i + 4] for i in range(0, len(raw), 4))
        bic = "".join(rng.choice("ABCDEFGHIJKLMNOPRSTUVWXYZ") for _ in range(4)) + cc + "XX" + rng.choice(["", "XXX"])
        return f"IBAN {iban} · BIC {bic}"
    if c == "en-GB":
        return f"Sort code {_digits(rng, 2)}-{_digits(rng, 2)}-{_digits(rng, 2)} · Account {_digits(rng, 8)}"
    if c == "en-US":
        return f"ABA/Routing {_digits(rng, 9)} · Account {_digits(rng, 10)}"
    bank = rng.choice(_CN_BANKS)
    return f"{bank}{rng.choice(CITIES['zh-CN'])[0].rstrip('市')}分行 {' '.join(_digits(rng, 4) for _ in range(4))}"


def _invoice_number(rng: random.Random, loc: Loc, d: dt.date) -> str:
    n = rng.randint(1, 99999)
    if loc.lang == "zh":
        return rng.choice([_digits(rng, 8), f"{d.year}{_digits(rng, 6)}", f"FP{d.year}{n:05d}"])
    if loc.lang == "de":
        return rng.choice([f"RE-{d.year}-{n:05d}", f"R{d.year % 100:02d}{n:05d}", f"{d.year}-{n:04d}", f"RG{n:06d}"])
    if loc.lang == "fr":
        return rng.choice([f"F{d.year}-{n:04d}", f"FA-{n:05d}", f"{d.year}{d.month:02d}-{n:03d}", f"FAC{n:06d}"])
    return rng.choice([f"INV-{d.year}-{n:05d}", f"{n:06d}", f"INV{n:05d}", f"{d.year % 100:02d}-{n:04d}",
                       f"A{rng.randint(1, 9)}-{n:05d}"])


def _initials(name: str) -> str:
    words = [w for w in name.replace("&", " ").split() if w[:1].isalpha()]
    if not words:
        return "X"
    if not name.isascii() and not any(c.isalpha() and c.isascii() for c in name):
        return name[2] if len(name) > 2 else name[0]
    return "".join(w[0] for w in words[:2]).upper()
