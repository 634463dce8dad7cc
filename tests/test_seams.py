"""The seams hold: no code outside a task's own module asks which task it is, and no code outside the metric registry
lists metric names.

These read medtl's source (the abstract syntax tree, not text), so a new branch on a task's kind or a new list of
metric names fails here, naming the file and line. Adding a task is then one module, one line in
``medtl.tasks.TASKS`` and its metrics in ``medtl.metric_specs.METRICS``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import medtl
from medtl.metric_specs import METRIC_SPECS
from medtl.tasks import TASK_NAMES

ROOT = Path(medtl.__file__).parent
TASK_MODULES = {ROOT / "tasks" / f"{name}.py" for name in TASK_NAMES}
#: the task and metric registries themselves
REGISTRIES = {ROOT / "tasks" / "__init__.py", ROOT / "metric_specs.py"}
#: implementation modules of one task (helpers of its module: what they do is that task's, by construction)
TASK_HELPERS = {
    ROOT / "transforms" / "segmentation.py",
    ROOT / "train" / "seg_inference.py",
    ROOT / "train" / "overlay.py",
    ROOT / "comparison" / "patient_values.py",
    ROOT / "comparison" / "overlays.py",
    ROOT / "io" / "dicom_seg.py",
    ROOT / "io" / "dicom_seg_write.py",
}


#: classes whose type tells the task: a task class, or a task's per-patient units
TASK_TYPES = {
    "ClassificationTask",
    "SegmentationTask",
    "MultiLabelTask",
    "RegressionTask",
    "PatientPredictions",
    "PatientValues",
}


def _sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if p not in TASK_MODULES | REGISTRIES)


def _where(path: Path) -> str:
    return str(path.relative_to(ROOT.parent)) if path.is_relative_to(ROOT.parent) else path.name


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _task_branches(path: Path) -> list[str]:
    """``x == "segmentation"``, ``task.name != "classification"``, ``x in ("regression", ...)``, ``match`` cases
    on a task name, and ``config.segmentation is None``-style tests of a task section."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            names = [s for s in _strings(node) if s in TASK_NAMES]
            section = any(
                isinstance(n, ast.Attribute) and n.attr in TASK_NAMES and isinstance(op, ast.Is | ast.IsNot)
                for n, op in zip([node.left, *node.comparators], [*node.ops, None], strict=False)
            )
            if names or section:
                found.append(f"{_where(path)}:{node.lineno}: {ast.unparse(node)}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("isinstance", "issubclass")
            and any(isinstance(n, ast.Name) and n.id in TASK_TYPES for n in ast.walk(node.args[1]))
        ):
            found.append(f"{_where(path)}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.match_case) and any(s in TASK_NAMES for s in _strings(node.pattern)):
            found.append(f"{_where(path)}:{node.lineno}: case {ast.unparse(node.pattern)}")
    return found


def test_no_code_outside_a_task_module_branches_on_the_task() -> None:
    branches = [b for p in _sources() if p not in TASK_HELPERS for b in _task_branches(p)]
    assert branches == [], "branches on a task's kind outside medtl/tasks/<task>.py:\n" + "\n".join(branches)


def test_no_metric_name_list_outside_the_registry() -> None:
    """A tuple, list, set or dict literal naming two or more registered metrics is a second list of metric names."""
    names = set(METRIC_SPECS)
    found = []
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        exports = {
            id(n.value)
            for n in ast.walk(tree)
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)
        }
        for node in ast.walk(tree):
            if id(node) in exports:  # __all__ names functions (metrics.auroc), not metrics
                continue
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                items = node.elts
            elif isinstance(node, ast.Dict):
                items = [k for k in node.keys if k is not None]
            else:
                continue
            values = [n.value for n in items if isinstance(n, ast.Constant) and isinstance(n.value, str)]
            # a metric's name, or what Lightning logs it as (val_auroc)
            listed = {v.removeprefix("val_") for v in values if v.removeprefix("val_") in names} - {"loss"}
            if len(listed) >= 2:
                found.append(f"{_where(path)}:{node.lineno}: {sorted(listed)}")
    assert found == [], "metric names listed outside medtl/metric_specs.py:\n" + "\n".join(found)


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    """The two scans are not blind: a planted branch and a planted list are found."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        'def f(task, cfg):\n    if task.name == "segmentation" or cfg.regression is not None:\n        return 1\n'
        "    return isinstance(task, SegmentationTask)\n"
        'METRICS = ("auroc", "dice")\n'
    )
    assert len(_task_branches(planted)) == 3
    tree = ast.parse(planted.read_text())
    lists = [n for n in ast.walk(tree) if isinstance(n, ast.Tuple) and len(n.elts) == 2]
    assert lists and {e.value for e in lists[0].elts} <= set(METRIC_SPECS)
