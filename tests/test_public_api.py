"""The names ``import medtl`` promises: each resolves to the function or class it names, and stays so."""

from __future__ import annotations

import importlib

import medtl


def test_every_export_resolves() -> None:
    for name in medtl.__all__:
        assert getattr(medtl, name) is not None, name


def test_functions_are_not_shadowed_by_packages() -> None:
    # importing a subpackage binds its name on the parent package: no package may share a function's name
    importlib.import_module("medtl.comparison.compare")
    importlib.import_module("medtl.pretraining")
    from medtl.comparison.compare import compare
    from medtl.train.scoring import evaluate

    assert medtl.compare is compare
    assert medtl.evaluate is evaluate
    assert callable(medtl.fine_tune) and callable(medtl.predict)


def test_pretrain_stays_a_function_after_its_package_is_imported() -> None:
    importlib.import_module("medtl.pretraining.run")
    from medtl.pretraining import pretrain

    assert medtl.pretrain is pretrain
