"""Export a finished run as a model that runs without medtl: ONNX (checked with onnxruntime), TorchScript (traced)
or a MONAI bundle, each with the run's input recorded beside it (``input.json``: the input record, the task, the
outputs and what they mean, the preprocessing to apply).

Every exporter reads the run's input record and task state from its ``preprocessing.json`` (through
:func:`medtl.train.predict.load_run`); none re-derives them from ``config.yaml``. Nothing but the CLI imports this
package.
"""

from __future__ import annotations

from medtl.export.common import TOLERANCE, ExportError
from medtl.export.run import FORMATS, ExportResult, export_run

__all__ = ["FORMATS", "TOLERANCE", "ExportError", "ExportResult", "export_run"]
