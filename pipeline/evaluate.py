"""Score a run's output against ground truth: field-level precision, recall and F1.

The engine of ``docextract eval --truth T --results R``::

    report = evaluate(Path("data/samples"), Path("out/invoices"), schema="invoice")
    print(format_table(report))
    write_report(report, Path("eval/2024-06-01.json"))     # or .parquet: one row per field

**Ground truth** ``T`` is one of

* a *documents* directory: next to each document ``x.pdf`` a ``x.truth.json`` holding
  ``{"schema": "invoice", "truth": {...}}`` (or the bare schema dict), and/or a
  ``truth.jsonl`` index (lines with ``file``, ``schema``, ``truth``; ``T`` may also be
  that file).  Truth is matched to result rows by ``doc_id`` = SHA-256 of the
  document's bytes, or by the stem of ``source_path`` when the document is absent;
* an *SROIE* directory: ``*.txt`` / ``*.json`` files each holding one JSON object with
  ``company``, ``date``, ``address``, ``total``; mapped onto the receipt schema's
  ``merchant``, ``date``, ``address``, ``total`` (only those four are scored).  Other
  ``.txt`` files (SROIE's OCR box files) are ignored.

**Results** ``R`` is a run's output directory (``results/*.parquet``,
``failures/*.parquet``).  The newest row per ``doc_id`` counts (parts sort by name,
as in :func:`pipeline.store.reconcile`); rows written under another schema are ignored.

**Scoring.**  Values are normalised first (text: casefold, whitespace collapsed;
dates: parsed from common formats; amounts: ``Decimal``, thousands separators and
decimal commas understood; empty means absent).  Per field and document, a present
prediction equal to a present truth is a TP; a present wrong prediction is an FP *and*,
when truth is present, an FN; a missing prediction of a present truth is an FN.
Failed documents and documents without a row predict nothing: every truth field they
have is an FN.  Item lists (``line_items``, ``items``) are matched one-to-one by an
optimal assignment (most equal fields, ties by description similarity), never by
position; unmatched predicted items are FPs, unmatched truth items FNs.  A ratio with
an empty denominator is 0, except for a field with no counts at all (absent on both
sides everywhere), which scores 1.  ``overall`` is micro-averaged over all fields.
A document is an exact match when every scored field and every item list (as a
multiset) equals the truth after normalisation.
"""

from __future__ import annotations

import datetime as dt
import difflib
import enum
import hashlib
import json
import re
import types
import typing
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path, PurePath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from pipeline.discover import sniff
from pipeline.records import DocKind
from pipeline.fs import write_bytes_atomic
from pipeline.store import parquet_bytes
from schemas import resolve

TRUTH_SUFFIX = ".truth.json"
TRUTH_INDEX = "truth.jsonl"
SROIE_MAP = {"company": "merchant", "date": "date", "address": "address", "total": "total"}
SKIP_COLUMNS = {"raw_json", "warnings", "errors", "raw_output", "message"}
REPORT_METADATA_KEY = b"docextract.eval"


class EvalError(ValueError):
    """The evaluation cannot run (no truth, unknown or ambiguous schema, missing results directory)."""


# =========================================================================== report


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """(precision, recall, F1); an empty denominator gives 0, no counts at all give 1."""
    if tp + fp + fn == 0:
        return 1.0, 1.0, 1.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, 2 * tp / (2 * tp + fp + fn)


@dataclass
class FieldStats:
    """Counts and scores of one field (``total``, ``vendor.name``, ``line_items.amount``)."""

    field: str
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    kind: str = "scalar"  # "scalar", "item" (a field of list items) or "overall"

    @classmethod
    def from_counts(cls, name: str, tp: int, fp: int, fn: int, kind: str = "scalar") -> FieldStats:
        return cls(name, tp, fp, fn, *prf(tp, fp, fn), kind=kind)

    @property
    def support(self) -> int:
        """Number of present truth values."""
        return self.tp + self.fn


@dataclass
class ItemStats:
    """Item-level counts of one item list; precision/recall/F1 count exactly matched items."""

    field: str
    truth_items: int
    predicted_items: int
    matched: int  # one-to-one pairs with at least one equal field
    exact: int  # pairs with every field equal
    precision: float
    recall: float
    f1: float


@dataclass
class DocResult:
    """How one truth document fared."""

    truth_file: str
    doc_id: str | None
    status: str  # "matched", "failed", "missing"
    exact: bool
    error_type: str | None = None
    mismatched: list[str] = field(default_factory=list)  # fields (and item lists) not equal to truth


@dataclass
class EvalReport:
    """Everything ``docextract eval`` reports; :func:`write_report` / :func:`read_report` persist it."""

    schema: str
    mode: str  # "documents" or "sroie"
    truth_path: str
    results_path: str
    truth_documents: int
    matched: int
    missing: int
    failed: int
    exact_matches: int
    exact_match_rate: float
    overall: FieldStats
    fields: list[FieldStats]
    items: list[ItemStats] = field(default_factory=list)
    failures_by_type: dict[str, int] = field(default_factory=dict)
    skipped_truth: int = 0  # truth documents declared for another schema
    documents: list[DocResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    evaluated_at: str = ""

    def field_stats(self, name: str) -> FieldStats:
        """The stats of field ``name`` (``total``, ``vendor.name``, ``line_items.amount``)."""
        for f in self.fields:
            if f.field == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalReport:
        d = dict(d)
        d["overall"] = FieldStats(**d["overall"])
        d["fields"] = [FieldStats(**f) for f in d["fields"]]
        d["items"] = [ItemStats(**i) for i in d.get("items", [])]
        d["documents"] = [DocResult(**r) for r in d.get("documents", [])]
        return cls(**d)


# =========================================================================== normalisation

_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
           "october", "november", "december"]  # fmt: skip
_YEAR = r"(\d{4}|\d{2})(?!\d)"  # four digits, or two (18 -> 2018, 85 -> 1985)
_DATE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("ymd", re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})")),
    ("ymd", re.compile(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)")),
    ("dmy", re.compile(r"(?<!\d)(\d{1,2})[-/.](\d{1,2})[-/.]" + _YEAR)),
    ("d_mon_y", re.compile(r"(?<!\d)(\d{1,2})(?:st|nd|rd|th)?[\s\-/.]*([A-Za-z]{3,9})\.?[\s\-/.,]*" + _YEAR)),
    ("mon_d_y", re.compile(r"([A-Za-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})(?!\d)")),
]
_TIME = re.compile(r"(\d{1,2})[:.](\d{2})(?:[:.](\d{2}))?\s*([ap])?\.?m?\.?", re.IGNORECASE)


def norm_text(value: Any) -> str | None:
    """Casefolded, whitespace collapsed and stripped; empty is absent."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    text = " ".join(str(value).split()).casefold()
    return text or None


def _month(word: str) -> int | None:
    w = word.casefold()
    for i, name in enumerate(_MONTHS, start=1):
        if len(w) >= 3 and (name.startswith(w) or (w == "sept" and i == 9)):
            return i
    return None


def _year(y: str) -> int:
    n = int(y)
    if len(y) == 2:
        return 2000 + n if n < 70 else 1900 + n
    return n


def _make_date(y: int, m: int, d: int) -> dt.date | None:
    try:
        return dt.date(y, m, d)
    except ValueError:
        return None


def _date_from_match(kind: str, g: tuple[str, ...]) -> dt.date | None:
    if kind == "ymd":
        return _make_date(int(g[0]), int(g[1]), int(g[2]))
    if kind == "dmy":  # day first; month first only when day first is impossible (12/25/2018)
        y = _year(g[2])
        return _make_date(y, int(g[1]), int(g[0])) or _make_date(y, int(g[0]), int(g[1]))
    if kind == "d_mon_y":
        m = _month(g[1])
        return _make_date(_year(g[2]), m, int(g[0])) if m else None
    m = _month(g[0])  # mon_d_y
    return _make_date(_year(g[2]), m, int(g[1])) if m else None


def parse_date(text: str) -> dt.date | None:
    """A date in ``text``: YYYY-MM-DD, DD/MM/YYYY (also ``-``/``.``, 2-digit years), D Mon YYYY,
    Mon D, YYYY, YYYY年M月D日.  None when none is found."""
    for kind, pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            d = _date_from_match(kind, m.groups())
            if d is not None:
                return d
    return None


def parse_amount(text: str) -> Decimal | None:
    """An amount from text: ``"1,234.50"``, ``"1.234,56"``, ``"9,00"``, ``"RM 9.00"``, ``"-3"``.

    With both separators the rightmost is the decimal point; a lone comma followed by
    one or two digits is a decimal comma, otherwise commas group thousands; several
    dots group thousands, one dot is the decimal point.  None when there are no digits.
    """
    s = text.strip()
    negative = s.startswith("-") or s.endswith("-") or (s.startswith("(") and s.endswith(")"))
    s = re.sub(r"[^\d.,]", "", s)
    if not re.search(r"\d", s):
        return None
    if "," in s and "." in s:
        decimal_sep = "," if s.rfind(",") > s.rfind(".") else "."
        s = s.replace("." if decimal_sep == "," else ",", "").replace(",", ".")
    elif "," in s:
        s = s.replace(",", ".") if re.fullmatch(r"\d*,\d{1,2}", s) else s.replace(",", "")
    elif s.count(".") > 1:
        s = s.replace(".", "")
    try:
        value = Decimal(s)
    except InvalidOperation:
        return None
    return -value if negative else value


def parse_time(text: str) -> dt.time | None:
    """``HH:MM``, ``HH:MM:SS``, optional am/pm."""
    m = _TIME.search(text)
    if not m:
        return None
    h, mi, sec = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    ampm = (m.group(4) or "").lower()
    if ampm == "p" and h < 12:
        h += 12
    elif ampm == "a" and h == 12:
        h = 0
    try:
        return dt.time(h, mi, sec)
    except ValueError:
        return None


def _norm_number(value: Any) -> Any:
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, (Decimal, int)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    text = norm_text(value)
    if text is None:
        return None
    parsed = parse_amount(text)
    return parsed if parsed is not None else text  # unparseable truth stays present (and never equal)


def _norm_date(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = norm_text(value)
    if text is None:
        return None
    return parse_date(text) or text


def _norm_time(value: Any) -> Any:
    if isinstance(value, dt.time):
        return value.replace(microsecond=0, tzinfo=None)
    text = norm_text(value)
    if text is None:
        return None
    return parse_time(text) or text


def _norm_bool(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    text = norm_text(value)
    return {"true": True, "false": False, "yes": True, "no": False}.get(text or "", text)


def normalize(kind: str, value: Any) -> Any:
    """The comparable form of ``value`` for a field of ``kind``; None means absent."""
    if value is None:
        return None
    if kind.startswith("multiset:"):
        inner = kind.split(":", 1)[1]
        values = value if isinstance(value, (list, tuple)) else [value]
        normed = [v for v in (normalize(inner, x) for x in values) if v is not None]
        return tuple(sorted(normed, key=repr)) or None
    return _NORMALIZERS.get(kind, norm_text)(value)


_NORMALIZERS = {"text": norm_text, "number": _norm_number, "date": _norm_date, "time": _norm_time, "bool": _norm_bool}


# =========================================================================== schema plan


@dataclass(frozen=True)
class Leaf:
    """A scalar leaf of the schema, by path (``("vendor", "name")``), and how to normalise it."""

    path: tuple[str, ...]
    kind: str

    @property
    def name(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class ListField:
    """A list of models (``line_items``): its item leaves (relative paths) and the description-like leaf."""

    path: tuple[str, ...]
    leaves: tuple[Leaf, ...]
    key: int | None

    @property
    def name(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class Plan:
    """What is scored for a schema."""

    scalars: tuple[Leaf, ...]
    lists: tuple[ListField, ...]

    def only(self, names: Iterable[str]) -> Plan:
        keep = set(names)
        return Plan(tuple(s for s in self.scalars if s.name in keep), tuple(li for li in self.lists if li.name in keep))


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(base type, is_list) with Annotated and Optional removed."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _unwrap(args[0])
    if origin in (typing.Union, types.UnionType):
        non_null = [a for a in args if a is not type(None)]
        return _unwrap(non_null[0]) if len(non_null) == 1 else (str, False)
    if origin in (list, tuple, set, frozenset):
        return (_unwrap(args[0])[0] if args else str), True
    return annotation, False


def _kind(base: Any) -> str:
    if typing.get_origin(base) is typing.Literal or not isinstance(base, type):
        return "text"
    if issubclass(base, bool):
        return "bool"
    if issubclass(base, (Decimal, int, float)):
        return "number"
    if issubclass(base, dt.datetime):
        return "text"
    if issubclass(base, dt.date):
        return "date"
    if issubclass(base, dt.time):
        return "time"
    return "text"


def _walk(model: type[BaseModel], prefix: tuple[str, ...], in_list: bool) -> tuple[list[Leaf], list[ListField]]:
    leaves: list[Leaf] = []
    lists: list[ListField] = []
    for name, info in model.model_fields.items():
        path = prefix + (name,)
        base, is_list = _unwrap(info.annotation)
        is_model = isinstance(base, type) and issubclass(base, BaseModel)
        if is_model and not is_list:
            sub_leaves, sub_lists = _walk(base, path, in_list)
            leaves += sub_leaves
            lists += sub_lists
        elif is_model and not in_list:
            item_leaves, _ = _walk(base, (), True)
            lists.append(ListField(path, tuple(item_leaves), _key_leaf(item_leaves)))
        elif is_list:
            leaves.append(Leaf(path, "multiset:" + ("text" if is_model else _kind(base))))
        else:
            leaves.append(Leaf(path, _kind(base)))
    return leaves, lists


def _key_leaf(leaves: list[Leaf]) -> int | None:
    """Index of the leaf used to break ties between item pairings: ``description``, else the first text leaf."""
    names = [leaf.name for leaf in leaves]
    if "description" in names:
        return names.index("description")
    return next((i for i, leaf in enumerate(leaves) if leaf.kind == "text"), None)


def build_plan(model: type[BaseModel]) -> Plan:
    """Every scalar leaf (nested models flattened with dots) and every list of models."""
    leaves, lists = _walk(model, (), False)
    return Plan(tuple(leaves), tuple(lists))


# =========================================================================== documents as comparable values

Item = tuple[Any, ...]


@dataclass
class DocView:
    """A document normalised along a plan: one value per scalar leaf, one item list per list field."""

    scalars: tuple[Any, ...]
    lists: tuple[list[Item], ...]


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def view(plan: Plan, data: dict[str, Any]) -> DocView:
    """Normalise a truth dict or a result row; items with no present field are dropped."""
    scalars = tuple(normalize(leaf.kind, _get(data, leaf.path)) for leaf in plan.scalars)
    lists = []
    for lf in plan.lists:
        raw = _get(data, lf.path) or []
        items = [tuple(normalize(leaf.kind, _get(it, leaf.path)) for leaf in lf.leaves) for it in raw]
        lists.append([it for it in items if any(v is not None for v in it)])
    return DocView(scalars, tuple(lists))


def empty_view(plan: Plan) -> DocView:
    """What a failed or missing document predicts: nothing."""
    return DocView(tuple(None for _ in plan.scalars), tuple([] for _ in plan.lists))


# =========================================================================== item matching


def _min_cost_assignment(cost: list[list[int]]) -> list[int]:
    """Hungarian algorithm (O(n²m)), ``n <= m`` rows: the column of each row in a minimum-cost assignment."""
    n, m = len(cost), len(cost[0])
    inf = float("inf")
    u, v = [0.0] * (n + 1), [0.0] * (m + 1)
    owner, way = [0] * (m + 1), [0] * (m + 1)  # owner[j]: row (1-based) assigned to column j
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        minv, used = [inf] * (m + 1), [False] * (m + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = owner[j0], inf, 0
            row = cost[i0 - 1]
            for j in range(1, m + 1):
                if not used[j]:
                    cur = row[j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    assignment = [-1] * n
    for j in range(1, m + 1):
        if owner[j]:
            assignment[owner[j] - 1] = j - 1
    return assignment


def max_weight_pairs(weights: list[list[int]]) -> list[tuple[int, int]]:
    """(row, column) pairs of a one-to-one assignment maximising the total weight (rectangular allowed)."""
    if not weights or not weights[0]:
        return []
    n, m = len(weights), len(weights[0])
    if n <= m:
        return list(enumerate(_min_cost_assignment([[-w for w in row] for row in weights])))
    transposed = [[-weights[i][j] for i in range(n)] for j in range(m)]
    return [(i, j) for j, i in enumerate(_min_cost_assignment(transposed))]


def equal_fields(t: Item, p: Item) -> int:
    """Number of fields present in the truth item and equal in the prediction."""
    return sum(1 for a, b in zip(t, p) if a is not None and a == b)


def _key_similarity(t: Item, p: Item, key: int | None) -> float:
    if key is None or not isinstance(t[key], str) or not isinstance(p[key], str):
        return 0.0
    return difflib.SequenceMatcher(None, t[key], p[key]).ratio()


def _pair_weight(t: Item, p: Item, key: int | None, scale: int) -> int:
    """Equal fields first; description similarity (0..1000) only breaks ties."""
    return equal_fields(t, p) * scale + int(1000 * _key_similarity(t, p, key))


def _exact_pairs(truth: list[Item], pred: list[Item]) -> list[tuple[int, int]]:
    """Pair identical items first (always part of some optimal assignment; keeps big lists fast)."""
    free: dict[Item, list[int]] = {}
    for j, p in enumerate(pred):
        free.setdefault(p, []).append(j)
    pairs = []
    for i, t in enumerate(truth):
        if free.get(t):
            pairs.append((i, free[t].pop(0)))
    return pairs


def match_items(truth: list[Item], pred: list[Item], key: int | None = None) -> list[tuple[int, int]]:
    """One-to-one (truth index, prediction index) pairs maximising the number of equal fields,
    ties broken by similarity of the ``key`` field; pairs sharing no equal field are left unmatched."""
    pairs = _exact_pairs(truth, pred)
    rest_t = [i for i in range(len(truth)) if i not in {a for a, _ in pairs}]
    rest_p = [j for j in range(len(pred)) if j not in {b for _, b in pairs}]
    if rest_t and rest_p:
        scale = 1000 * min(len(rest_t), len(rest_p)) + 1  # tie-breaks sum to less than one equal field
        weights = [[_pair_weight(truth[i], pred[j], key, scale) for j in rest_p] for i in rest_t]
        for a, b in max_weight_pairs(weights):
            if equal_fields(truth[rest_t[a]], pred[rest_p[b]]) > 0:
                pairs.append((rest_t[a], rest_p[b]))
    return sorted(pairs)


# =========================================================================== ground truth


@dataclass
class TruthDoc:
    """One ground-truth document."""

    label: str  # the truth file (and line) for messages
    data: dict[str, Any]  # schema-shaped truth
    schema: str | None  # declared schema, if any
    doc_id: str | None  # SHA-256 of the document's bytes, when the document is there
    stem: str  # matched against result rows' source_path stems when the document is not


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _visible_files(root: Path, pattern: str) -> Iterator[Path]:
    for p in sorted(root.rglob(pattern)):
        rel = p.relative_to(root).parts
        if p.is_file() and not any(part.startswith(".") for part in rel):
            yield p


def _sibling_document(path: Path, stem: str, exclude_suffixes: set[str], warnings: list[str]) -> Path | None:
    """The document next to a truth file: same stem, another extension; sniffed formats preferred."""
    candidates = sorted(
        p
        for p in path.parent.iterdir()
        if p.is_file()
        and p.stem == stem
        and p.suffix
        and not p.name.endswith(TRUTH_SUFFIX)
        and p.suffix.lower() not in exclude_suffixes
    )
    if len(candidates) > 1:
        known = [p for p in candidates if _sniff_file(p) is not DocKind.UNKNOWN]
        if len(known) == 1:
            return known[0]
        names = ", ".join(p.name for p in candidates)
        warnings.append(f"{path}: several documents named {stem}.* ({names}); using {candidates[0].name}")
    return candidates[0] if candidates else None


def _sniff_file(path: Path) -> DocKind:
    try:
        with open(path, "rb") as f:
            return sniff(f.read(2048))
    except OSError:
        return DocKind.UNKNOWN


def _split_wrapper(data: Any, label: str) -> tuple[dict[str, Any], str | None]:
    """(truth dict, declared schema) from ``{"schema", "truth"}`` or a bare dict."""
    if not isinstance(data, dict):
        raise EvalError(f"{label}: ground truth must be a JSON object")
    if isinstance(data.get("truth"), dict):
        schema = data.get("schema")
        return data["truth"], str(schema) if schema else None
    return data, None


def _truth_doc(label: str, data: Any, doc: Path | None, stem: str) -> TruthDoc:
    truth, schema = _split_wrapper(data, label)
    return TruthDoc(label, truth, schema, sha256_file(doc) if doc else None, stem)


def _load_truth_files(root: Path, warnings: list[str]) -> list[tuple[Path | None, TruthDoc]]:
    out = []
    for tf in _visible_files(root, "*" + TRUTH_SUFFIX):
        stem = tf.name[: -len(TRUTH_SUFFIX)]
        try:
            data = json.loads(tf.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise EvalError(f"{tf}: cannot read ground truth: {e}") from e
        doc = _sibling_document(tf, stem, set(), warnings)
        out.append((doc, _truth_doc(str(tf.relative_to(root)), data, doc, stem)))
    return out


def _load_truth_index(index: Path) -> list[tuple[Path | None, TruthDoc]]:
    out = []
    for n, line in enumerate(index.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        label = f"{index.name}:{n}"
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise EvalError(f"{label}: not JSON: {e}") from e
        if not isinstance(rec, dict) or "file" not in rec or not isinstance(rec.get("truth"), dict):
            raise EvalError(f"{label}: expected an object with 'file' and 'truth'")
        path = index.parent / str(rec["file"])
        doc = path if path.is_file() else None
        stem = PurePath(str(rec["file"])).stem
        out.append((doc, _truth_doc(label, {"schema": rec.get("schema"), "truth": rec["truth"]}, doc, stem)))
    return out


def load_document_truth(root: Path, warnings: list[str]) -> list[TruthDoc]:
    """Truth from ``*.truth.json`` files and/or a ``truth.jsonl`` index (a per-file truth wins)."""
    index = root if root.is_file() else root / TRUTH_INDEX
    entries = [] if root.is_file() else _load_truth_files(root, warnings)
    seen = {doc.resolve() for doc, _ in entries if doc is not None}
    seen_stems = {t.stem for doc, t in entries if doc is None}
    if index.is_file():
        for doc, t in _load_truth_index(index):
            if (doc is not None and doc.resolve() in seen) or (doc is None and t.stem in seen_stems):
                continue
            entries.append((doc, t))
    return [t for _, t in entries]


def _sroie_record(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not set(SROIE_MAP) & set(data):
        return None
    return {SROIE_MAP[k]: v for k, v in data.items() if k in SROIE_MAP}


def load_sroie_truth(root: Path, warnings: list[str]) -> list[TruthDoc]:
    """SROIE key files (``*.txt`` / ``*.json`` with company/date/address/total) as receipt truth."""
    docs, ignored = [], 0
    files = sorted(set(_visible_files(root, "*.txt")) | set(_visible_files(root, "*.json")))
    for f in files:
        record = _sroie_record(f)
        if record is None:
            ignored += 1
            continue
        doc = _sibling_document(f, f.stem, {".txt", ".json", ".jsonl"}, warnings)
        docs.append(TruthDoc(str(f.relative_to(root)), record, "receipt", sha256_file(doc) if doc else None, f.stem))
    if ignored and docs:
        warnings.append(f"ignored {ignored} .txt/.json file(s) that are not SROIE key files")
    return docs


def load_truth(truth: Path, warnings: list[str]) -> tuple[str, list[TruthDoc]]:
    """(mode, truth documents): ``documents`` when truth.json files or an index exist, else ``sroie``."""
    if truth.is_file():
        if truth.suffix != ".jsonl":
            raise EvalError(f"{truth}: a truth file must be a .jsonl index (or pass its directory)")
        return "documents", load_document_truth(truth, warnings)
    if not truth.is_dir():
        raise EvalError(f"truth directory {truth} does not exist")
    if (truth / TRUTH_INDEX).is_file() or next(_visible_files(truth, "*" + TRUTH_SUFFIX), None):
        return "documents", load_document_truth(truth, warnings)
    docs = load_sroie_truth(truth, warnings)
    if not docs:
        raise EvalError(
            f"no ground truth in {truth}: expected <name>{TRUTH_SUFFIX} files, a {TRUTH_INDEX} index, "
            "or SROIE .txt/.json key files"
        )
    return "sroie", docs


# =========================================================================== results


@dataclass
class Outcome:
    """The newest row of a document in a results directory."""

    kind: str  # "result" or "failure"
    row: dict[str, Any]
    order: tuple[str, str, int]  # (part name, table, row): larger is newer


def _read_part(path: Path) -> list[dict[str, Any]]:
    try:
        names = [n for n in pq.read_schema(path).names if n not in SKIP_COLUMNS]
        return pq.read_table(path, columns=names).to_pylist()
    except (pa.ArrowInvalid, OSError) as e:
        raise EvalError(f"cannot read {path}: {e}") from e


def read_outcomes(out_dir: Path) -> list[Outcome]:
    """Every row of ``results/`` and ``failures/``; failures sort before results of the same part."""
    if not out_dir.is_dir():
        raise EvalError(f"results directory {out_dir} does not exist")
    outcomes = []
    for table, kind in (("failures", "failure"), ("results", "result")):
        for part in sorted((out_dir / table).glob("*.parquet")):
            for n, row in enumerate(_read_part(part)):
                if row.get("doc_id"):
                    outcomes.append(Outcome(kind, row, (part.name, table, n)))
    return outcomes


def _stem_of(source_path: str | None) -> str | None:
    if not source_path:
        return None
    return PurePath(re.split(r"[\\/]", source_path)[-1]).stem


@dataclass
class ResultIndex:
    """Newest outcome per doc_id for one schema, and doc_ids by source_path stem."""

    by_id: dict[str, Outcome]
    by_stem: dict[str, set[str]]
    other_schema: set[str]  # doc_ids having rows only under another schema

    @classmethod
    def build(cls, outcomes: list[Outcome], schema: str) -> ResultIndex:
        by_id: dict[str, Outcome] = {}
        other: set[str] = set()
        for o in outcomes:
            doc_id = o.row["doc_id"]
            if o.row.get("schema_name") not in (None, schema):
                other.add(doc_id)
                continue
            if doc_id not in by_id or o.order > by_id[doc_id].order:
                by_id[doc_id] = o
        by_stem: dict[str, set[str]] = {}
        for doc_id, o in by_id.items():
            stem = _stem_of(o.row.get("source_path"))
            if stem:
                by_stem.setdefault(stem, set()).add(doc_id)
        return cls(by_id, by_stem, other - set(by_id))

    def find(self, doc: TruthDoc, warnings: list[str]) -> Outcome | None:
        """By doc_id when the document is there, else by source_path stem (unique stems only)."""
        if doc.doc_id is not None:
            return self.by_id.get(doc.doc_id)
        ids = self.by_stem.get(doc.stem, set())
        if len(ids) > 1:
            warnings.append(f"{doc.label}: {len(ids)} result rows have a source named {doc.stem}.*; counted as missing")
            return None
        return self.by_id[next(iter(ids))] if ids else None


# =========================================================================== schema choice


def choose_schema(mode: str, docs: list[TruthDoc], outcomes: list[Outcome], schema: str | None) -> str:
    """The schema to score: given, else the truth's only declared schema, else the results' only schema."""
    if mode == "sroie":
        if schema not in (None, "receipt"):
            raise EvalError(f"SROIE ground truth maps onto the receipt schema, not {schema!r}")
        return "receipt"
    if schema:
        return schema
    declared = Counter(d.schema for d in docs if d.schema)
    produced = {o.row.get("schema_name") for o in outcomes if o.row.get("schema_name")}
    if len(declared) == 1:
        return next(iter(declared))
    if len(produced) == 1 and (not declared or next(iter(produced)) in declared):
        return next(iter(produced))
    counts = ", ".join(f"{k}: {n}" for k, n in sorted(declared.items())) or "none declared"
    made = ", ".join(sorted(produced)) or "none"
    raise EvalError(f"cannot tell which schema to score (truth: {counts}; results: {made}); pass a schema")


# =========================================================================== scoring


@dataclass
class _Scorer:
    """Accumulates counts document by document."""

    plan: Plan
    counts: dict[str, list[int]] = field(default_factory=dict)  # field -> [tp, fp, fn]
    items: dict[str, list[int]] = field(default_factory=dict)  # list -> [truth, predicted, matched, exact]

    def __post_init__(self) -> None:
        for leaf in self.plan.scalars:
            self.counts[leaf.name] = [0, 0, 0]
        for lf in self.plan.lists:
            self.items[lf.name] = [0, 0, 0, 0]
            for leaf in lf.leaves:
                self.counts[f"{lf.name}.{leaf.name}"] = [0, 0, 0]

    def _count(self, name: str, t: Any, p: Any) -> bool:
        """Add one comparison; True when equal (both absent included)."""
        c = self.counts[name]
        if t is not None and t == p:
            c[0] += 1
            return True
        if p is not None:
            c[1] += 1
        if t is not None:
            c[2] += 1
        return t is None and p is None

    def add(self, truth: DocView, pred: DocView) -> list[str]:
        """Score one document; returns the names of fields and item lists that differ."""
        wrong = [
            leaf.name
            for leaf, t, p in zip(self.plan.scalars, truth.scalars, pred.scalars)
            if not self._count(leaf.name, t, p)
        ]
        for lf, t_items, p_items in zip(self.plan.lists, truth.lists, pred.lists):
            if not self._add_items(lf, t_items, p_items):
                wrong.append(lf.name)
        return wrong

    def _add_items(self, lf: ListField, truth: list[Item], pred: list[Item]) -> bool:
        pairs = match_items(truth, pred, lf.key)
        names = [f"{lf.name}.{leaf.name}" for leaf in lf.leaves]
        exact = 0
        for i, j in pairs:
            exact += all([self._count(n, t, p) for n, t, p in zip(names, truth[i], pred[j])])
        paired_t, paired_p = {i for i, _ in pairs}, {j for _, j in pairs}
        for i in set(range(len(truth))) - paired_t:
            for n, t in zip(names, truth[i]):
                self._count(n, t, None)
        for j in set(range(len(pred))) - paired_p:
            for n, p in zip(names, pred[j]):
                self._count(n, None, p)
        s = self.items[lf.name]
        s[0], s[1], s[2], s[3] = s[0] + len(truth), s[1] + len(pred), s[2] + len(pairs), s[3] + exact
        return Counter(truth) == Counter(pred)

    def field_stats(self) -> list[FieldStats]:
        kinds = {f"{lf.name}.{leaf.name}": "item" for lf in self.plan.lists for leaf in lf.leaves}
        return [FieldStats.from_counts(n, *c, kind=kinds.get(n, "scalar")) for n, c in self.counts.items()]

    def item_stats(self) -> list[ItemStats]:
        out = []
        for name, (truth, pred, matched, exact) in self.items.items():
            out.append(ItemStats(name, truth, pred, matched, exact, *prf(exact, pred - exact, truth - exact)))
        return out


def _dedupe(docs: list[TruthDoc], warnings: list[str]) -> list[TruthDoc]:
    """One truth per document: identical bytes under two names are one document (as in a run)."""
    seen: dict[str, TruthDoc] = {}
    out = []
    for d in docs:
        if d.doc_id is not None and d.doc_id in seen:
            warnings.append(f"{d.label}: same document bytes as {seen[d.doc_id].label}; scored once")
            continue
        if d.doc_id is not None:
            seen[d.doc_id] = d
        out.append(d)
    return out


def _status(outcome: Outcome | None) -> tuple[str, str | None]:
    if outcome is None:
        return "missing", None
    if outcome.kind == "failure":
        return "failed", outcome.row.get("error_type") or "unknown"
    return "matched", None


def evaluate(truth: Path, results: Path, schema: str | None = None) -> EvalReport:
    """Score the run output in ``results`` against the ground truth in ``truth`` (see the module docstring)."""
    truth, results = Path(truth), Path(results)
    warnings: list[str] = []
    mode, docs = load_truth(truth, warnings)
    outcomes = read_outcomes(results)
    name = choose_schema(mode, docs, outcomes, schema)
    try:
        plan = build_plan(resolve(name))
    except ValueError as e:
        raise EvalError(str(e)) from e
    if mode == "sroie":
        plan = plan.only(SROIE_MAP.values())
    selected = _dedupe([d for d in docs if d.schema in (None, name)], warnings)
    skipped = sum(1 for d in docs if d.schema not in (None, name))
    if not selected:
        raise EvalError(f"no ground truth for schema {name!r} in {truth}")
    index = ResultIndex.build(outcomes, name)
    scorer = _Scorer(plan)
    documents: list[DocResult] = []
    for doc in selected:
        outcome = index.find(doc, warnings)
        status, error_type = _status(outcome)
        pred = view(plan, outcome.row) if outcome is not None and status == "matched" else empty_view(plan)
        wrong = scorer.add(view(plan, doc.data), pred)
        doc_id = outcome.row["doc_id"] if outcome else doc.doc_id
        documents.append(DocResult(doc.label, doc_id, status, status == "matched" and not wrong, error_type, wrong))
    other = sum(1 for d in documents if d.status == "missing" and d.doc_id in index.other_schema)
    if other:
        warnings.append(f"{other} truth document(s) have rows only under another schema than {name!r}")
    return _report(name, mode, truth, results, scorer, documents, skipped, warnings)


def _report(
    name: str,
    mode: str,
    truth: Path,
    results: Path,
    scorer: _Scorer,
    documents: list[DocResult],
    skipped: int,
    warnings: list[str],
) -> EvalReport:
    fields = scorer.field_stats()
    tp, fp, fn = (sum(getattr(f, k) for f in fields) for k in ("tp", "fp", "fn"))
    status = Counter(d.status for d in documents)
    exact = sum(d.exact for d in documents)
    return EvalReport(
        schema=name,
        mode=mode,
        truth_path=str(truth),
        results_path=str(results),
        truth_documents=len(documents),
        matched=status["matched"],
        missing=status["missing"],
        failed=status["failed"],
        exact_matches=exact,
        exact_match_rate=exact / len(documents),
        overall=FieldStats.from_counts("overall", tp, fp, fn, kind="overall"),
        fields=fields,
        items=scorer.item_stats(),
        failures_by_type=dict(sorted(Counter(d.error_type for d in documents if d.error_type).items())),
        skipped_truth=skipped,
        documents=documents,
        warnings=warnings,
        evaluated_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )


# =========================================================================== output


def _row(name: str, tp: Any, fp: Any, fn: Any, p: float, r: float, f: float, width: int) -> str:
    return f"{name:<{width}} {tp:>6} {fp:>6} {fn:>6} {p:>9.3f} {r:>7.3f} {f:>7.3f}"


def format_table(report: EvalReport) -> str:
    """A plain-text table: header counts, one line per field, overall, item lists, exact match, warnings."""
    width = max([len("overall (micro)")] + [len(f.field) for f in report.fields])
    counts = f"matched {report.matched}, failed {report.failed}, missing {report.missing}"
    if report.skipped_truth:
        counts += f"; truth for other schemas skipped {report.skipped_truth}"
    lines = [
        f"schema {report.schema} ({report.mode}); truth {report.truth_path}; results {report.results_path}",
        f"truth documents {report.truth_documents}: {counts}",
    ]
    if report.failures_by_type:
        lines.append("failures: " + ", ".join(f"{k} {n}" for k, n in report.failures_by_type.items()))
    header = f"{'field':<{width}} {'TP':>6} {'FP':>6} {'FN':>6} {'precision':>9} {'recall':>7} {'F1':>7}"
    lines += ["", header, "-" * len(header)]
    for f in report.fields:
        lines.append(_row(f.field, f.tp, f.fp, f.fn, f.precision, f.recall, f.f1, width))
    o = report.overall
    lines += ["-" * len(header), _row("overall (micro)", o.tp, o.fp, o.fn, o.precision, o.recall, o.f1, width)]
    for it in report.items:
        lines.append(
            f"item list {it.field}: truth {it.truth_items}, predicted {it.predicted_items}, matched {it.matched}, "
            f"exact {it.exact} (precision {it.precision:.3f}, recall {it.recall:.3f}, F1 {it.f1:.3f})"
        )
    lines.append(
        f"document exact match: {report.exact_matches}/{report.truth_documents} = {report.exact_match_rate:.3f}"
    )
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def _fields_table(report: EvalReport) -> pa.Table:
    rows = [{**asdict(f), "schema": report.schema, "evaluated_at": report.evaluated_at} for f in report.fields]
    schema = pa.schema(
        [
            ("evaluated_at", pa.string()),
            ("schema", pa.string()),
            ("field", pa.string()),
            ("kind", pa.string()),
            ("tp", pa.int64()),
            ("fp", pa.int64()),
            ("fn", pa.int64()),
            ("precision", pa.float64()),
            ("recall", pa.float64()),
            ("f1", pa.float64()),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    meta = {REPORT_METADATA_KEY: json.dumps(report.to_dict(), ensure_ascii=False).encode()}
    return table.replace_schema_metadata(meta)


def write_report(report: EvalReport, path: Path) -> None:
    """``.json``: the whole report; ``.parquet``: one row per field (the whole report in the file metadata)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
        write_bytes_atomic(path, data.encode())
    elif suffix == ".parquet":
        write_bytes_atomic(path, parquet_bytes(_fields_table(report), "zstd"))
    else:
        raise EvalError(f"{path}: report format must be .json or .parquet")


def read_report(path: Path) -> EvalReport:
    """A report written by :func:`write_report` (either format)."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        meta = pq.read_schema(path).metadata or {}
        if REPORT_METADATA_KEY not in meta:
            raise EvalError(f"{path} is not a docextract eval report")
        return EvalReport.from_dict(json.loads(meta[REPORT_METADATA_KEY]))
    return EvalReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
