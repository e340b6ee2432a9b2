"""Exported models: the network as ONNX graphs run by onnxruntime, tokenizer and decoder as in a checkpoint.

An exported directory (`nlpcli export`) is the checkpoint directory without its torch weights and training
state (config.json, vocab.json, tokenizer files, the card), plus one ONNX graph per model method that the task's
prediction calls (`model.onnx` for `forward`, `model.NAME.onnx` for another) and `onnx.json`, which marks the
directory and describes the graphs: opset, precision, each method's inputs and outputs.

Loading builds the pipeline from config and assets exactly as for a checkpoint, then puts an `OnnxModel` in place
of `pipe.model`: it runs the graphs on the tensors the model's methods receive and returns torch tensors in the
structure they return, so the task's `forward` and `postprocess` hooks run unchanged (same decoding, same
entities, triples and answers).

onnxruntime is an optional extra; it is imported only when an exported model is loaded or written.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import ONNX_META
from .errors import CheckpointError, ConfigError

OPSET = 17
SKIPPED = ("model.safetensors", "train_state.pt", "metrics.json.tmp")  # torch-only files not copied on export
# The example inputs traced on export: two texts of different lengths, so the batch holds padding.
EXAMPLE_TEXTS = ("新华社北京电，国家主席习近平在人民大会堂会见了法国总统马克龙。", "张三在上海工作。")
# Checked after export: another batch size and other lengths than the traced example (a graph that fixed a
# size while tracing fails or differs here, and the export is refused rather than written).
CHECK_TEXTS = ("上海", "今天北京的天气很好。", "李四明天去广州出差，后天回到南京。")
TOLERANCE = 1e-3  # of an fp32 graph's outputs against torch's (they agree to about 1e-6)


def onnxruntime() -> Any:
    """The onnxruntime module, or a one-line error saying how to install it."""
    from .extras import require

    return require("onnxruntime", "onnx", "an exported (ONNX) model")


def is_exported(directory: Path) -> bool:
    return (directory / ONNX_META).is_file()


def graph_file(method: str) -> str:
    return "model.onnx" if method == "forward" else f"model.{method}.onnx"


# --- loading ---------------------------------------------------------------------------------------------
class OnnxModel(nn.Module):
    """Stands in for a task's model: each exported method runs its ONNX graph (on the CPU, with torch's thread
    count) on the same arguments and returns tensors in the same structure (a tensor, a tuple or a dict)."""

    def __init__(self, directory: Path, meta: dict[str, Any]):
        super().__init__()
        ort = onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the --threads setting, as for torch
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers etc. are not the user's concern
        self.methods: dict[str, dict[str, Any]] = meta["methods"]
        self.sessions: dict[str, Any] = {}
        for method in self.methods:
            path = directory / graph_file(method)
            try:
                self.sessions[method] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
                raise CheckpointError(f"{path}: cannot load the ONNX graph ({str(e).splitlines()[0]})") from None
            if method != "forward":
                setattr(self, method, functools.partial(self.run, method))

    def forward(self, *args: Any) -> Any:
        return self.run("forward", *args)

    def run(self, method: str, *args: Any) -> Any:
        spec = self.methods[method]
        feed = {name: t.detach().cpu().numpy() for name, t in zip(spec["inputs"], _flat_inputs(spec["args"], args))}
        outs = [torch.from_numpy(o) for o in self.sessions[method].run(None, feed)]
        kind = spec["output"]
        if kind == "tensor":
            return outs[0]
        if kind == "tuple":
            return tuple(outs)
        return dict(zip(kind, outs))


def attach(pipe: Any, directory: Path, device: str | torch.device, resume: bool, quantize: bool) -> Any:
    """`pipe` (built from an exported directory's config and assets) running its model through onnxruntime."""
    if resume:
        raise CheckpointError(
            f"{directory}: an exported (ONNX) model cannot be trained; train from the checkpoint it was exported from"
        )
    if quantize:
        raise ConfigError("--quantize is for torch checkpoints; an exported (ONNX) model runs in fp32")
    if str(device) not in ("cpu", "auto"):
        raise ConfigError(f"--device {device}: an exported (ONNX) model runs on the CPU (use --device cpu)")
    meta = _read_meta(directory)
    pipe.model = OnnxModel(directory, meta)
    pipe.precision = None  # the graph's own precision: autocast does not reach onnxruntime
    return pipe


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / ONNX_META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        methods = meta["methods"]
        ok = isinstance(methods, dict) and all({"args", "inputs", "output"} <= set(m) for m in methods.values())
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: damaged export description ({type(e).__name__})") from None
    if not ok:
        raise CheckpointError(f"{path}: damaged export description (methods)")
    return meta


# --- exporting -------------------------------------------------------------------------------------------


def _flat_inputs(spec: list[Any], args: tuple[Any, ...]) -> list[torch.Tensor]:
    flat: list[torch.Tensor] = []
    for keys, a in zip(spec, args):
        flat.extend([a[k] for k in keys] if keys is not None else [a])
    return flat
