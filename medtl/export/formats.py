"""ONNX and TorchScript files of a run's network, each checked against PyTorch on the same input.

Both trace :class:`~medtl.export.common.ExportedNetwork` (``torch.jit.script`` fails on torchvision's and MONAI's
networks; tracing records the operations one input takes, which is all these feed-forward networks do). The ONNX
file is written by PyTorch's TorchScript-based exporter (opset 17, a dynamic batch axis) and run with onnxruntime;
the TorchScript file is loaded back with ``torch.jit.load``. Both are compared with the PyTorch module on the sample
alone and on a batch of two: the largest absolute difference is returned, and an export above
:data:`~medtl.export.common.TOLERANCE` is refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from medtl.export.common import INPUT_NAME, ExportedNetwork, ExportError, compare

__all__ = ["OPSET", "write_onnx", "write_torchscript"]

#: the ONNX operator set written
OPSET = 17
_FIX_ONNX = "export to torchscript, or report the architecture (its trace does not reproduce it)"
_FIX_TS = "export to onnx, or report the architecture (its trace does not reproduce it)"
_EXTRA = "install the export extra: pip install 'medtl[export]' (onnx and onnxruntime)"


def _require_onnx() -> tuple[object, object]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ExportError(f"ONNX export needs {exc.name}, which is not installed", fix=_EXTRA) from None
    return onnx, onnxruntime


def write_onnx(network: ExportedNetwork, sample: torch.Tensor, path: Path, output_name: str) -> float:
    """Write ``network`` as ONNX to ``path`` and check it with onnxruntime against PyTorch.

    Args:
        network: the module to export (eval mode, on the CPU).
        sample: a preprocessed input ``(1, C, *size)``.
        path: the ``.onnx`` file.
        output_name: the graph's output name (``scores`` or ``logits``).

    Returns:
        The largest absolute difference between onnxruntime's and PyTorch's outputs.

    Raises:
        ExportError: onnx or onnxruntime missing; the exporter fails; the difference is above the tolerance.
    """
    onnx, ort = _require_onnx()
    axes = {INPUT_NAME: {0: "batch"}, output_name: {0: "batch"}}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its successor on every call
            torch.onnx.export(
                network,
                (sample,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[output_name],
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        onnx.checker.check_model(str(path))  # type: ignore[attr-defined]
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds; one line names the first cause
        first = " ".join(str(exc).split())[:300]
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {first}",
                          fix="export to torchscript instead") from None  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]

    def run(batch: torch.Tensor):
        return session.run([output_name], {INPUT_NAME: batch.numpy()})[0]

    return compare(network, run, sample, what="the ONNX model (onnxruntime)", fix=_FIX_ONNX)


def trace(network: ExportedNetwork, sample: torch.Tensor) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of ``network`` on ``sample``.

    Raises:
        ExportError: tracing fails.
    """
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return torch.jit.trace(network, (sample,), check_trace=False)
    except Exception as exc:  # noqa: BLE001
        first = " ".join(str(exc).split())[:300]
        raise ExportError(f"torch.jit.trace failed: {type(exc).__name__}: {first}",
                          fix="export to onnx instead") from None  # fmt: skip


def write_torchscript(network: ExportedNetwork, sample: torch.Tensor, path: Path) -> float:
    """Write the traced ``network`` to ``path`` and check the file, loaded back, against PyTorch.

    Returns:
        The largest absolute difference.

    Raises:
        ExportError: tracing fails, or the difference is above the tolerance.
    """
    traced = trace(network, sample)
    torch.jit.save(traced, str(path))
    loaded = torch.jit.load(str(path), map_location="cpu").eval()
    return compare(network, lambda b: loaded(b).numpy(), sample, what="the traced TorchScript model", fix=_FIX_TS)
