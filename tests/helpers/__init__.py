"""Shared test helpers, importable as ``helpers`` (pytest's ``pythonpath`` holds ``tests``).

- ``helpers.dicom``: the one DICOM writer of the suite (single images, series, multi-frame) and SimpleITK references.
- ``helpers.compare``: a compare manifest and a stand-in training engine.
- ``helpers.tasks``: small learnable tasks written as real files, and a base experiment config.
- ``helpers.model_states``: random but non-trivial torchvision state dicts.
"""
