"""The layers of ARCHITECTURE.md hold: a module imports only from its own layer and the layers below it.

Every import of a ``medtl`` module is read from the source tree (lazy imports inside functions included; imports under
``if TYPE_CHECKING:`` are not imports at run time and are skipped), so a new upward import fails here with its file
and line. The few that are allowed are listed in :data:`ALLOWED`, each with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import medtl

ROOT = Path(medtl.__file__).parent

#: (layer, module prefixes), lowest first: the table of ARCHITECTURE.md
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundations",
        (
            "medtl.errors",
            "medtl.utils",
            "medtl._lazy",
            "medtl.bootstrap",
            "medtl.metric_specs",
            "medtl.tasks",
            "medtl.config",
        ),
    ),
    ("io", ("medtl.io",)),
    ("data", ("medtl.data", "medtl.resources")),
    ("rundir", ("medtl.rundir",)),
    ("weights", ("medtl.weights",)),
    ("backbones", ("medtl.backbones",)),
    ("models", ("medtl.models",)),
    ("transforms", ("medtl.transforms",)),
    ("task protocol", ("medtl.tasks.base",)),
    ("train", ("medtl.train",)),
    ("comparison", ("medtl.comparison",)),
    ("task modules", tuple(f"medtl.tasks.{t}" for t in ("classification", "segmentation", "multilabel", "regression"))),
    ("pretraining", ("medtl.pretraining",)),
    ("export", ("medtl.export",)),
    ("cli", ("medtl.cli",)),
]

#: (importer, imported) -> why the upward import is allowed
ALLOWED: dict[tuple[str, str], str] = {
    ("medtl.config.sections", "medtl.weights.sources"): (
        "model.arch may be left out for a single-architecture weight source: the validator asks the source registry "
        "(data, no network or file access)"
    ),
    ("medtl.tasks.base", "medtl.train.metrics"): "the protocol's scan-level defaults call the engine's helpers",
    ("medtl.tasks.base", "medtl.train.inference"): "the protocol's scan-level defaults call the engine's helpers",
    ("medtl.tasks.base", "medtl.train.card"): "the protocol's scan-level defaults call the engine's helpers",
    ("medtl.tasks.base", "medtl.train.predict"): "the protocol's scan-level defaults call the engine's helpers",
    ("medtl.tasks.base", "medtl.train.scoring"): "the protocol's scan-level defaults call the engine's helpers",
    ("medtl.train.scoring", "medtl.tasks.segmentation"): (
        "evaluate_segmentation and seg_inference are segmentation's own inference code (tests/test_seams.py lists "
        "them as the segmentation task's helpers)"
    ),
    ("medtl.train.seg_inference", "medtl.tasks.segmentation"): "segmentation's own inference code (see above)",
}


def _layer(module: str) -> int | None:
    """The layer of ``module`` (the longest matching prefix wins); the package root (``import medtl``, lazy) is none."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def _module_of(path: Path) -> str:
    return ".".join(("medtl", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:``."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def _imports(path: Path) -> list[tuple[str, int]]:
    """The ``medtl`` modules ``path`` imports, with their lines (``from medtl import x``: ``medtl.x``)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_blocks(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "medtl":
                found += [(f"medtl.{a.name}", node.lineno) for a in node.names]
            elif node.module.startswith("medtl."):
                found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("medtl.")]
    return found


def _upward() -> list[str]:
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        me = _module_of(path)
        mine = _layer(me)
        for target, line in _imports(path):
            theirs = _layer(target)
            if mine is None or theirs is None or theirs <= mine or (me, target) in ALLOWED:
                continue
            problems.append(f"{me} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]}), line {line}")
    return problems


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    problems = _upward()
    assert problems == [], "imports from a higher layer (ARCHITECTURE.md):\n" + "\n".join(problems)


def test_every_allowed_exception_is_still_needed() -> None:
    """An exception nobody uses any more is removed from the list, so the list says what the code does."""
    used = {(_module_of(p), t) for p in ROOT.rglob("*.py") for t, _ in _imports(p)}
    assert [pair for pair in ALLOWED if pair not in used] == []


def test_every_module_has_a_layer() -> None:
    assert [m for m in map(_module_of, ROOT.rglob("*.py")) if m != "medtl" and _layer(m) is None] == []


def test_the_check_finds_an_upward_import(tmp_path: Path) -> None:
    planted = ROOT / "io" / "_planted_for_test.py"
    planted.write_text("def f():\n    from medtl.train.run import fine_tune\n    return fine_tune\n")
    try:
        assert any("medtl.io._planted_for_test" in p and "medtl.train.run" in p for p in _upward())
    finally:
        planted.unlink()
