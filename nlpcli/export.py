"""`nlpcli export`: a trained model written as ONNX graphs that onnxruntime runs (the exported directory and how it
is loaded: `nlpcli/onnx_runtime.py`). Each model method the task's prediction calls is traced on example texts,
then checked against torch on other batch sizes and lengths before anything is written."""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import ONNX_META, _swap_into_place, _sync_tree, resolve_checkpoint_dir
from .data.io import os_reason
from .errors import CheckpointError, ConfigError, NlpcliError
from .onnx_runtime import (
    CHECK_TEXTS,
    EXAMPLE_TEXTS,
    OPSET,
    SKIPPED,
    TOLERANCE,
    OnnxModel,
    _flat_inputs,
    graph_file,
    is_exported,
    onnxruntime,
)
from .tasks.base import Pipeline
from .version import __version__


class _KeyLog(dict[str, Any]):
    """A batch dict that remembers which tensors the model read (so the graph takes exactly those inputs)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read: list[str] = []

    def _note(self, key: str) -> None:
        if key in self.keys() and torch.is_tensor(dict.__getitem__(self, key)) and key not in self.read:
            self.read.append(key)

    def __getitem__(self, key: str) -> Any:
        self._note(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._note(key)
        return super().get(key, default)


class _Recorder(nn.Module):
    """Wraps a model: the first call of each method is recorded (its arguments, with the batch keys read)."""

    def __init__(self, model: nn.Module, methods: tuple[str, ...]):
        super().__init__()
        self.inner = model
        self.calls: dict[str, tuple[Any, ...]] = {}
        for method in methods:
            if method != "forward":
                setattr(self, method, functools.partial(self.call, method))

    def forward(self, *args: Any) -> Any:
        return self.call("forward", *args)

    def call(self, method: str, *args: Any) -> Any:
        if method not in self.calls:
            args = tuple(_KeyLog(a) if isinstance(a, dict) else a for a in args)
            self.calls[method] = args
        return getattr(self.inner, method)(*args)


def _arg_spec(args: tuple[Any, ...]) -> list[Any]:
    """Per argument: the batch keys read (a dict argument) or None (a tensor)."""
    return [list(a.read) if isinstance(a, _KeyLog) else None for a in args]


def _input_names(spec: list[Any]) -> list[str]:
    return [name for i, keys in enumerate(spec) for name in (keys if keys is not None else [f"arg{i}"])]


class _Flat(nn.Module):
    """One model method as a module of positional tensors in, a flat tuple of tensors out (what the exporter
    traces)."""

    def __init__(self, model: nn.Module, method: str, spec: list[Any]):
        super().__init__()
        self.model = model
        self.method = method
        self.spec = spec

    def forward(self, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        args: list[Any] = []
        it = iter(flat)
        for keys in self.spec:
            args.append({k: next(it) for k in keys} if keys is not None else next(it))
        out = getattr(self.model, self.method)(*args)
        if torch.is_tensor(out):
            return (out,)
        return tuple(out.values()) if isinstance(out, dict) else tuple(out)


def _output_spec(out: Any) -> Any:
    if torch.is_tensor(out):
        return "tensor"
    return list(out) if isinstance(out, dict) else "tuple"


def export(model_dir: str | Path, output: str | Path) -> Path:
    """Write a trained model as an exported directory (see the module's docstring); returns its path.

    fp32 only: onnxruntime's dynamic int8 quantisation did not pay for these models (benchmarks/onnx_speed.py:
    no faster with int8 matrix products, half the speed with int8 convolutions too)."""
    from . import api

    onnxruntime()
    source = resolve_checkpoint_dir(model_dir)
    if is_exported(source):
        raise ConfigError(f"{source}: already an exported model; export the torch checkpoint it came from")
    dest = Path(output)
    if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not is_exported(dest))):
        raise ConfigError(f"{dest}: exists and is not an exported model; choose another --output")
    pipe = api.load(source, device="cpu", precision="fp32").pipeline
    if not pipe.onnx_methods:
        raise ConfigError(f"{pipe.name} models cannot be exported to ONNX (they sample in a Python loop)")
    calls = _record(pipe, EXAMPLE_TEXTS)
    tmp: Path | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(*SKIPPED), dirs_exist_ok=True)
        methods = {}
        for method, args in calls.items():
            methods[method] = _export_method(pipe.model, method, args, tmp / graph_file(method))
        meta = {
            "format": 1,
            "nlpcli_version": __version__,
            "opset": OPSET,
            "precision": "fp32",
            "methods": methods,
        }
        (tmp / ONNX_META).write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
        _check(pipe, OnnxModel(tmp, meta))
        _note_in_card(tmp / "README.md")
        _sync_tree(tmp)
        _swap_into_place(tmp, dest)
    except OSError as e:
        raise CheckpointError(f"{dest}: cannot write the exported model ({os_reason(e)})") from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _record(pipe: Pipeline, texts: tuple[str, ...]) -> dict[str, tuple[Any, ...]]:
    """The arguments of each exported method's first call while predicting the example records.

    Thresholds are set near zero so that every method runs (e.g. the relation model's object pointers run only
    for subjects found)."""
    recorder = _Recorder(pipe.model, pipe.onnx_methods)
    low = {name: 1e-4 for name in pipe.threshold_fields}
    probe = pipe.configured(**low)
    probe.model = recorder
    probe.predict_checked(pipe.onnx_examples(list(texts)), batch_size=len(texts))
    missing = [m for m in pipe.onnx_methods if m not in recorder.calls]
    if missing:
        raise NlpcliError(f"cannot export: the example inputs never reached the model's {', '.join(missing)}")
    return recorder.calls


def _check(pipe: Pipeline, exported: OnnxModel) -> None:
    """The graphs run on other inputs than the traced ones and give the model's outputs."""
    for method, args in _record(pipe, CHECK_TEXTS).items():
        with torch.no_grad():
            want = _tensors(getattr(pipe.model, method)(*args))
        try:
            got = _tensors(exported.run(method, *args))
        except Exception as e:  # onnxruntime's own exception types
            raise NlpcliError(
                f"cannot export this model: its ONNX graph {method} fails on other sizes ({str(e).splitlines()[0]})"
            ) from None
        for w, g in zip(want, got):
            real = w.abs() < 1e9  # masked positions hold -1e12 (or the dtype's minimum) in both
            bad = w.shape != g.shape or not torch.equal(real, g.abs() < 1e9)
            if not bad and real.any():
                bad = bool((w.float() - g.float())[real].abs().max() > TOLERANCE)
            if bad:
                raise NlpcliError(
                    f"cannot export this model: its ONNX graph {method} differs from torch on other sizes"
                )


def _tensors(out: Any) -> list[torch.Tensor]:
    if torch.is_tensor(out):
        return [out]
    return list(out.values()) if isinstance(out, dict) else list(out)


def _export_method(model: nn.Module, method: str, args: tuple[Any, ...], path: Path) -> dict[str, Any]:
    spec = _arg_spec(args)
    flat = _flat_inputs(spec, args)
    names = _input_names(spec)
    with torch.no_grad():
        raw = getattr(model, method)(*args)
    output = _output_spec(raw)
    n_out = 1 if output == "tensor" else len(raw)
    out_names = output if isinstance(output, list) else [f"out{i}" for i in range(n_out)]
    # Batch and length vary (axes 0 and 1 of every input); each input gets its own names, as lengths of
    # questions and passages, or of subjects and texts, differ.
    axes = {name: {d: f"{name}_{d}" for d in range(min(t.dim(), 2))} for name, t in zip(names, flat)}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter's deprecation notice and tracer warnings about Python values: the traced
        # shapes are checked by the tests at other batch sizes and lengths.
        warnings.simplefilter("ignore")
        # nn.MultiheadAttention's fused inference kernel has no ONNX form; its plain path computes the same.
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            _trace(model, method, spec, flat, path, names, out_names, axes)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
    return {"args": spec, "inputs": names, "output": output}


class _TraceableAttention(nn.Module):
    """A batch-first nn.MultiheadAttention in self-attention, as the exporter can trace it at any batch size and
    length: torch's own (non-fused) path reshapes by Python ints, which the trace fixes at the example's sizes.
    Same weights, same result (attention dropout is off in inference)."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        self.mha = mha

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_padding_mask: Any = None, **_: Any
    ) -> tuple[torch.Tensor, None]:
        m = self.mha
        b, n, heads = query.shape[0], query.shape[1], m.num_heads
        q, k, v = (
            x.reshape(b, n, heads, m.head_dim).transpose(1, 2)
            for x in F.linear(query, m.in_proj_weight, m.in_proj_bias).chunk(3, dim=2)
        )
        keep = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return m.out_proj(out.transpose(1, 2).reshape(b, n, m.embed_dim)), None


@contextmanager
def _traceable(model: nn.Module) -> Iterator[None]:
    """The model's self-attention layers swapped for `_TraceableAttention` while it is traced."""
    swapped = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.MultiheadAttention) and child.batch_first and child._qkv_same_embed_dim
    ]
    for parent, name, child in swapped:
        setattr(parent, name, _TraceableAttention(child))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def _trace(
    model: nn.Module,
    method: str,
    spec: list[Any],
    flat: list[torch.Tensor],
    target: Path,
    names: list[str],
    out_names: list[str],
    axes: dict[str, dict[int, str]],
) -> None:
    flat_model = _Flat(model, method, spec)
    training = model.training
    try:
        with _traceable(model):
            torch.onnx.export(
                flat_model,
                tuple(flat),
                str(target),
                input_names=names,
                output_names=out_names,
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
    finally:
        model.train(training)  # the exporter restores the wrapper's (training) mode into the model


def _note_in_card(card: Path) -> None:
    if card.is_file():
        note = f"\n## Exported\n\nONNX graphs (opset {OPSET}, fp32) run by onnxruntime: `{ONNX_META}`.\n"
        card.write_text(card.read_text(encoding="utf-8") + note, encoding="utf-8")
