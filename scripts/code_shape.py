#!/usr/bin/env python3
"""Print the functions over MAX_FUNC lines and the modules over MAX_MODULE lines in pipeline/ and schemas/.

The project's standard: stage code small, functions <= ~80 lines, modules <= ~500 lines. Not a test: a
report to act on. Exit status 1 when something is over, 0 otherwise.

    .venv/bin/python scripts/code_shape.py [--func 80] [--module 500] [PATH ...]
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def offenders(paths: list[Path], max_func: int, max_module: int) -> list[str]:
    out = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        if lines > max_module:
            out.append(f"{rel}: module {lines} lines (> {max_module})")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                n = (node.end_lineno or node.lineno) - start + 1
                if n > max_func:
                    out.append(f"{rel}:{node.lineno}: function {node.name} {n} lines (> {max_func})")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", type=Path, default=[ROOT / "pipeline", ROOT / "schemas"])
    ap.add_argument("--func", type=int, default=80)
    ap.add_argument("--module", type=int, default=500)
    a = ap.parse_args()
    files = sorted(f for p in a.paths for f in ([p] if p.is_file() else p.rglob("*.py")))
    found = offenders(files, a.func, a.module)
    print("\n".join(found) if found else f"ok: {len(files)} modules, none over {a.module} lines, no function over {a.func}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
