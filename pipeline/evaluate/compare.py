"""Two runs against the same truth, paired by document: ``docextract eval --truth T --results A --compare B``.

Made to decide a setting (``prompt.anchor_text``, a model, a DPI) on one corpus.  Per field: F1 of A and
of B, the difference B - A with a 95% bootstrap interval (documents resampled with replacement, both
runs together, so the pairing is kept), and the documents where the field is right in one run and not
the other (wins for B / losses for B) with a two-sided sign test.  A field is right in a document when
it has no false positive and no false negative there (absent on both sides is right).  Per document: B
better (fewer wrong fields), worse, or tied, with the same sign test, and exact match in each run.

An interval that excludes 0, and a sign test p under 0.05, say the difference is unlikely to be noise
on these documents; they say nothing of other corpora.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluate.errors import EvalError
from pipeline.evaluate.scoring import Scorer, evaluate, prepare
from pipeline.evaluate.stats import EvalReport

BOOTSTRAP_ROUNDS = 2000
SEED = 0


@dataclass
class FieldDiff:
    field: str
    f1_a: float
    f1_b: float
    delta: float  # f1_b - f1_a
    ci_low: float  # 95% bootstrap interval of delta
    ci_high: float
    wins: int  # documents where the field is right in B and wrong in A
    losses: int  # right in A, wrong in B
    p_sign: float  # two-sided sign test on wins vs losses


@dataclass
class Comparison:
    schema: str
    truth_path: str
    a: str
    b: str
    documents: int
    overall: FieldDiff
    fields: list[FieldDiff]
    docs_better: int  # documents with fewer wrong fields in B
    docs_worse: int
    docs_tied: int
    p_docs: float
    exact_a: int
    exact_b: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial test of wins against losses (ties left out); 1 when there are none."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _counts(truth: Path, results: Path, schema: str | None, warnings: list[str]) -> tuple[str, list[str], dict[str, np.ndarray]]:
    """(schema, field names, {truth document: array fields x (tp, fp, fn)}) for one run."""
    s = prepare(truth, results, schema, warnings)
    names = list(Scorer(s.plan).counts)
    out: dict[str, np.ndarray] = {}
    for doc, _, t, pred in s.pairs(warnings):
        one = Scorer(s.plan)
        one.add(t, pred)
        out[doc.label] = np.array([one.counts[n] for n in names], dtype=np.int64)
    return s.name, names, out


def _f1(c: np.ndarray) -> np.ndarray:
    """F1 along the last axis of (..., 3) counts; 1 where there are no counts at all (as ``prf``)."""
    tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
    den = 2 * tp + fp + fn
    return np.where(den == 0, 1.0, 2 * tp / np.maximum(den, 1))


def _diff(name: str, a: np.ndarray, b: np.ndarray, idx: np.ndarray) -> FieldDiff:
    """``a``, ``b``: documents x 3 counts of one field (or of all fields summed)."""
    f1_a, f1_b = float(_f1(a.sum(0))), float(_f1(b.sum(0)))
    boot = _f1(b[idx].sum(1)) - _f1(a[idx].sum(1))
    low, high = np.quantile(boot, [0.025, 0.975]) if len(boot) else (0.0, 0.0)
    right_a = (a[:, 1] == 0) & (a[:, 2] == 0)
    right_b = (b[:, 1] == 0) & (b[:, 2] == 0)
    wins, losses = int((right_b & ~right_a).sum()), int((right_a & ~right_b).sum())
    return FieldDiff(name, f1_a, f1_b, f1_b - f1_a, float(low), float(high), wins, losses, sign_test(wins, losses))


def compare(truth: Path, a: Path, b: Path, schema: str | None = None, rounds: int = BOOTSTRAP_ROUNDS) -> Comparison:
    """Compare the runs in ``a`` and ``b`` on the truth documents of ``truth`` (see the module doc)."""
    truth, a, b = Path(truth), Path(a), Path(b)
    warnings: list[str] = []
    report_a: EvalReport = evaluate(truth, a, schema)
    name = report_a.schema
    _, names, counts_a = _counts(truth, a, name, warnings)
    _, _, counts_b = _counts(truth, b, name, [])
    report_b = evaluate(truth, b, name)
    docs = sorted(set(counts_a) & set(counts_b))
    if not docs:
        raise EvalError(f"no truth document is scored in both {a} and {b}")
    ca = np.stack([counts_a[d] for d in docs])  # documents x fields x 3
    cb = np.stack([counts_b[d] for d in docs])
    idx = np.random.default_rng(SEED).integers(0, len(docs), size=(rounds, len(docs)))
    fields = [_diff(n, ca[:, i], cb[:, i], idx) for i, n in enumerate(names)]
    overall = _diff("overall", ca.sum(1), cb.sum(1), idx)
    wrong_a = ((ca[..., 1] > 0) | (ca[..., 2] > 0)).sum(1)
    wrong_b = ((cb[..., 1] > 0) | (cb[..., 2] > 0)).sum(1)
    better, worse = int((wrong_b < wrong_a).sum()), int((wrong_b > wrong_a).sum())
    return Comparison(
        schema=name, truth_path=str(truth), a=str(a), b=str(b), documents=len(docs), overall=overall,
        fields=fields, docs_better=better, docs_worse=worse, docs_tied=len(docs) - better - worse,
        p_docs=sign_test(better, worse), exact_a=report_a.exact_matches, exact_b=report_b.exact_matches,
        warnings=sorted(set(warnings + report_b.warnings)),
    )  # fmt: skip


def format_comparison(c: Comparison) -> str:
    """A plain-text table: one line per field, overall, then the document counts."""
    width = max([len("overall (micro)")] + [len(f.field) for f in c.fields])
    header = (f"{'field':<{width}} {'F1 A':>6} {'F1 B':>6} {'B-A':>7} {'95% interval':>17} "
              f"{'B wins':>6} {'B loses':>7} {'p':>6}")  # fmt: skip

    def row(f: FieldDiff, label: str) -> str:
        ci = f"[{f.ci_low:+.3f}, {f.ci_high:+.3f}]"
        return (f"{label:<{width}} {f.f1_a:>6.3f} {f.f1_b:>6.3f} {f.delta:>+7.3f} {ci:>17} "
                f"{f.wins:>6} {f.losses:>7} {f.p_sign:>6.3f}")  # fmt: skip

    lines = [f"schema {c.schema}; truth {c.truth_path}; {c.documents} documents", f"A = {c.a}", f"B = {c.b}", "",
             header, "-" * len(header), *(row(f, f.field) for f in c.fields), "-" * len(header),
             row(c.overall, "overall (micro)"),
             f"documents: B better {c.docs_better}, worse {c.docs_worse}, tied {c.docs_tied} (sign test p {c.p_docs:.3f})",
             f"document exact match: A {c.exact_a}, B {c.exact_b}"]  # fmt: skip
    lines += [f"warning: {w}" for w in c.warnings]
    return "\n".join(lines)
