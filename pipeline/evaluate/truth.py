"""Ground truth: ``<name>.truth.json`` files and ``truth.jsonl`` indexes (synth), or SROIE key files.

A truth document is matched to result rows by ``doc_id`` = SHA-256 of the document's bytes when the
document sits next to its truth, else by the stem of the row's ``source_path``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from pipeline.discover import sniff
from pipeline.evaluate.errors import EvalError
from pipeline.records import DocKind

TRUTH_SUFFIX = ".truth.json"
TRUTH_INDEX = "truth.jsonl"
SROIE_MAP = {"company": "merchant", "date": "date", "address": "address", "total": "total"}


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
