"""The task contract: what every task provides, so the verbs and the trainer never branch on task names.

A task is a `Pipeline` subclass with a `TaskConfig` in sections, readers, a model, a loss, three prediction
hooks (`preprocess` / `forward` / `postprocess`, in the spirit of transformers' pipelines) run by the one
prediction loop here, its metrics, and `save` / `load` as a pair. It also declares what the verbs show of
it: its input fields and their options, an example record and what a prediction adds (`input_fields`,
`example`, `output_help`), and registers itself by name (`nlpcli.registry.register_task`).

Above the usual size because the contract is one class: its hooks, the one prediction loop and save/load as a
pair belong together, and every task reads them here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from rich.console import RenderableType
from torch import nn

from .. import startup
from ..card import render_card
from ..checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ..config import TaskConfig, TrainerConfig
from ..data.batching import Window
from ..data.io import ReadStats
from ..errors import CheckpointError, ConfigError, DataError
from ..records.lines import CHUNK_BATCHES, STALL
from ..tables import Report, metrics_report, render
from .fields import TEXT_FIELD, InputField

P = TypeVar("P", bound="Pipeline")


@dataclass
class TextPiece:
    """One window of a record's text: what the model reads, and where it sits in the whole text."""

    text: str
    window: Window


class Pipeline:
    """A task's readers, tensor encoder, model, decoder and metric behind one interface.

    Subclasses set `name`, `Config`, `main_metric` and implement the hooks below.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Config: ClassVar[type[TaskConfig]] = TaskConfig
    main_metric: ClassVar[str] = "f1"
    higher_is_better: ClassVar[bool] = True
    formats: ClassVar[tuple[str, ...]] = ()
    # A `predict` output file reads back as gold with `read` (the contract test holds tasks to it).
    predictions_are_gold: ClassVar[bool] = False
    # Predictions are sampled: seeded per predict call, so they repeat for the same input and batch size,
    # but another batching draws other samples.
    sampled: ClassVar[bool] = False
    # The fields of an input record, in order, with their `predict` and table-column options (a table's
    # columns are read into them).
    input_fields: ClassVar[tuple[InputField, ...]] = (TEXT_FIELD,)
    # An input record as `predict` reads it and `serve` shows it in its OpenAPI docs.
    example: ClassVar[dict[str, Any]] = {}
    # What a prediction adds to a record (`predict --help`, `nlpcli info TASK`), e.g. '"entities": [...].'
    output_help: ClassVar[str] = ""
    # Both from `input_fields` (set for each subclass): one input record given as `predict` options, option ->
    # (record field, whether it repeats into a list); and field -> kind of table cell, in order.
    record_options: ClassVar[dict[str, tuple[str, bool]]] = {"text": ("text", False)}
    table_fields: ClassVar[dict[str, str]] = {"text": "text"}
    # The inference fields `evaluate --thresholds` sweeps (set together), in the task's own units.
    threshold_fields: ClassVar[tuple[str, ...]] = ()
    # What a batch's `_tokens` counts, named in the training log and `report` ("tokens" per second, ...).
    speed_unit: ClassVar[str] = "tokens"
    # Public methods of the task besides the call (`nlpcli.load` offers them; the first is what `pipe` maps over).
    methods: ClassVar[tuple[str, ...]] = ()
    # Format-1 checkpoints: weight-name prefixes renamed since (old prefix -> new prefix).
    V1_WEIGHTS: ClassVar[dict[str, str]] = {}
    # The model's methods that prediction calls, each exported as one ONNX graph (`nlpcli export`); none: the
    # task cannot be exported.
    onnx_methods: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = cls.input_fields
        cls.record_options = {o: (f.name, f.repeats) for f in fields for o in f.options}
        cls.table_fields = {f.name: f.kind for f in fields}

    @classmethod
    def record_help(cls) -> str:
        """One line: an input record and what a prediction adds to it (`predict --help`, `nlpcli info`)."""
        shape = ", ".join(f'"{f.name}": ' + ("..." if f.kind == "text" else "[...]") for f in cls.input_fields)
        return "{" + shape + "} gains " + (cls.output_help or "its predictions.")

    def __init__(self, config: TaskConfig, assets: dict[str, Any], model: nn.Module):
        self.config = config
        self.assets = assets
        self.model = model
        self.device = torch.device("cpu")
        self.precision: torch.dtype | None = None  # autocast dtype of prediction (set by `load`)
        self.precision_note = ""  # what `load`'s precision auto chose and why (the CLI prints it)

    @property
    def labels(self) -> list[str]:
        """What the model tells apart (entity types, predicates), for `Predictor`'s description; [] if nothing."""
        return []

    # --- data -------------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | Path, fmt: str | None = None, skip_bad: bool = False) -> tuple[list[Any], ReadStats]:
        """Read a data file into examples; bad records raise DataError or are counted."""
        raise NotImplementedError

    @classmethod
    def check_examples(cls, config: Any, examples: list[Any], stats: ReadStats | None) -> list[Any]:
        """Examples that fit the config (e.g. a schema file); misfits raise DataError, or are counted in
        `stats` (given with --skip-bad) and dropped. The default keeps everything."""
        return examples

    def training_examples(self, examples: list[Any]) -> list[Any]:
        """Examples as the model trains on them (e.g. long texts cut into windows)."""
        return examples

    def example_length(self, example: Any) -> int:
        """Length used for bucketing."""
        return 1

    def collate(self, examples: list[Any]) -> dict[str, Any]:
        """Tensors for a batch; an int under '_tokens' counts the task's `speed_unit` for speed reports."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Training loss for a batch; `model` may be the DDP wrapper of self.model."""
        raise NotImplementedError

    def param_groups(self) -> list[dict[str, Any]] | None:
        """Optimizer groups (an `lr_scale` key scales the group's learning rate); None: the default."""
        return None

    @property
    def trainer_config(self) -> TrainerConfig:
        return self.config.trainer

    # --- building, saving and loading ---------------------------------------------------
    @classmethod
    def create(cls: type[P], config: Any, train_examples: list[Any]) -> P:
        """Build vocabularies from training data and a freshly initialised model."""
        raise NotImplementedError

    @classmethod
    def build(cls: type[P], config: Any, assets: dict[str, Any], directory: Path | None = None) -> P:
        """Rebuild the pipeline (untrained weights) from a config and saved assets (and files in `directory`)."""
        raise NotImplementedError

    def write_extra(self, directory: Path) -> None:
        """Write task files (e.g. a tokenizer) into a checkpoint directory being saved."""

    def save(
        self,
        directory: str | Path,
        metrics: dict[str, Any] | None = None,
        *,
        weights: dict[str, torch.Tensor] | None = None,
        train_state: dict[str, Any] | None = None,
        run: dict[str, Any] | None = None,
    ) -> Path:
        """Write this pipeline as a checkpoint (atomically): config, assets, weights (`weights` instead of the
        model's own, e.g. EMA averages), metrics, the trainer's state for --resume, and a model card
        (README.md; `run` is what the trainer knows of the run: data files, commands, steps, time)."""
        state = weights if weights is not None else self.model.state_dict()
        card = self.model_card(self.config, metrics, run)
        return save_checkpoint(
            directory,
            self.name,
            self.config.to_dict(),
            state,
            self.assets,
            metrics=metrics,
            train_state=train_state,
            write_extra=self.write_extra,
            readme=card,
        )

    @classmethod
    def model_card(cls, config: TaskConfig, metrics: dict[str, Any] | None, run: dict[str, Any] | None = None) -> str:
        """The model card (README.md) of a checkpoint of this task."""
        return render_card(cls.name, cls.summary, cls.main_metric, config, metrics, run)

    @classmethod
    def load(
        cls: type[P],
        directory: str | Path,
        overrides: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        resume: bool = False,
        quantize: bool = False,
        precision: str = "auto",
    ) -> P:
        """A trained pipeline of this task from a checkpoint (or training output) directory; another task's
        checkpoint is refused. `nlpcli.load(DIR)` is the way to load a checkpoint of any task (the registry
        finds the class of the task it names). Arguments as for `from_checkpoint`."""
        if cls is Pipeline:
            raise TypeError("Pipeline.load needs a task class; nlpcli.load(DIR) reads the task from the checkpoint")
        ckpt = load_checkpoint(directory, expect_task=cls.name)
        return cls.from_checkpoint(ckpt, overrides, device, resume, quantize, precision)

    @classmethod
    def from_checkpoint(
        cls: type[P],
        ckpt: Checkpoint,
        overrides: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        resume: bool = False,
        quantize: bool = False,
        precision: str = "auto",
    ) -> P:
        """The pipeline saved in a checkpoint of this task (already read: config, assets, metrics).

        `overrides` may change inference settings and the trainer's resumable fields only; a bare
        name is looked up in the inference section first, or in the trainer's when `resume`. `quantize`:
        dynamic int8 `Linear` layers for prediction on a CPU (faster for pretrained encoders; docs/results.md).
        `precision` of prediction: auto (bf16 on a GPU and on a CPU that multiplies bf16 natively, else fp32;
        `device.choose_precision`), fp32 or bf16 (docs/results.md); `precision_note` says what auto chose.
        """
        from ..device import resolve_device

        config = cls.saved_config(ckpt)
        if overrides:
            config = cls.with_runtime_overrides(config, overrides, resume)
        try:
            pipe = cls.build(config, ckpt.assets, ckpt.path)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            what = f"{type(e).__name__}: {e}".splitlines()[0]
            raise CheckpointError(f"{ckpt.path}: config.json or vocab.json does not fit the task ({what})") from None
        from ..onnx_runtime import attach, is_exported

        if is_exported(ckpt.path):  # an `nlpcli export` directory: the network runs in onnxruntime
            pipe = attach(pipe, ckpt.path, device, resume, quantize)
            startup.resume()
            return pipe
        state = ckpt.state_dict()
        if ckpt.format_version == 1:
            state = _renamed(state, cls.V1_WEIGHTS)
        state = cls.adapt_state(config, state, ckpt.path)
        try:
            pipe.model.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"{ckpt.path}: weights do not fit the model ({str(e).splitlines()[0]})") from None
        pipe.model.eval()
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        pipe = pipe.to(dev)
        from ..device import choose_precision

        chosen = choose_precision(dev, precision, quantized=quantize)
        pipe.precision, pipe.precision_note = chosen.dtype, chosen.note
        if quantize:
            pipe.quantize()
        startup.resume()  # a command's start-up ends with its model loaded
        return pipe

    def onnx_examples(self, texts: list[str]) -> list[dict[str, Any]]:
        """Prediction records built from example texts, traced when the model is exported to ONNX."""
        return [{"text": t} for t in texts]

    def quantize(self) -> None:
        """Replace the model's `Linear` layers by dynamically quantised int8 ones (prediction on a CPU only)."""
        if self.device.type != "cpu":
            raise ConfigError("int8 quantisation runs on the CPU only (use --device cpu)")
        import warnings

        with warnings.catch_warnings():  # torch's notices that this API moves to torchao: not the user's concern
            warnings.filterwarnings("ignore", message=r".*(torch\.ao\.quantization|quantize_per_tensor).*")
            self.model = torch.ao.quantization.quantize_dynamic(self.model, {nn.Linear}, dtype=torch.qint8)

    @classmethod
    def adapt_state(cls, config: TaskConfig, state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
        """Saved weights as this version's model takes them (or a CheckpointError saying why it cannot)."""
        return state

    @classmethod
    def saved_config(cls, ckpt: Checkpoint) -> TaskConfig:
        """The config a checkpoint was trained with. Format 1 kept one flat dict, mapped into sections here;
        format 2 used names renamed since (`max_len` meant six things), which the config's `MOVED` table maps to
        this format's fields: the old names are read where they stood, as options and presets are."""
        try:
            if ckpt.format_version == 1:
                config = cls.Config().updated(ckpt.config, strict=False)
                if config.encoder is not None:  # format 1 had no `auto`: no encoder field meant the DGCNN
                    config = config.updated({"encoder.name": ckpt.config.get("encoder", "dgcnn")})
                return config
            return cls.Config.from_dict(ckpt.config, strict=False)
        except ConfigError as e:  # a value out of range or of the wrong type: the checkpoint's, not an option's
            raise CheckpointError(f"{ckpt.path / 'config.json'}: {e}") from None

    @classmethod
    def with_runtime_overrides(cls, config: TaskConfig, overrides: dict[str, Any], resume: bool = False) -> TaskConfig:
        """The config with overrides that leave the trained model as it is; others are a ConfigError.

        Bare names are looked up in the inference section first, then in windows (`--max-len` of `generate` is
        the sampler's), or in the trainer's on --resume (`--batch-size` is the training batch)."""
        runtime = ("trainer", "inference", "windows") if resume else ("inference", "windows", "trainer")
        settable, others = {}, {}
        for key, value in overrides.items():
            try:
                config.locate(key, runtime)
                settable[key] = value
            except ConfigError:
                config.locate(key)  # raises for a name no section has
                others[key] = value
        fixed = config.updated(others).differences(config)  # the same value as trained is fine
        changed = config.updated(settable, only=runtime)
        fixed += [
            name
            for name in changed.differences(config)
            if name.startswith("trainer.") and name.split(".")[1] not in TrainerConfig.RESUMABLE
        ]
        if fixed:
            raise ConfigError(
                f"cannot change {', '.join(fixed)} of a trained model (the model depends on it; "
                "inference settings may change, and on --resume the run's length and logging)"
            )
        return changed

    def configured(self: P, **inference: Any) -> P:
        """This pipeline (the same model, not a copy of it) with other inference settings."""
        other = copy.copy(self)
        other.config = self.with_runtime_overrides(self.config, inference)
        return other

    def to(self: P, device: torch.device) -> P:
        self.device = device
        self.model.to(device)
        return self

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    # --- prediction: the one loop and its three hooks -------------------------------------
    def validate_record(self, record: dict[str, Any], path: str, line: int) -> None:
        """Check one prediction input record; raise DataError naming path and line.

        The default, for tasks that read one text per record, wants a string `text`.
        """
        if not isinstance(record.get("text"), str):
            raise DataError(path, "missing string field 'text'", line)

    def __call__(self, inputs: dict[str, Any] | Sequence[dict[str, Any]]) -> Any:
        """Predictions for one input record (a dict) or a list of them, as `nlpcli predict` writes them.
        Tasks also take their natural inputs here (`ner("text")`, `qa(question=..., passages=[...])`)."""
        if isinstance(inputs, dict):
            return self.predict_checked([inputs])[0]
        return self.predict_checked(list(inputs))

    def predict_checked(self, records: list[dict[str, Any]], batch_size: int | None = None) -> list[dict[str, Any]]:
        """`predict_records` for records from Python: each is validated first (a DataError names its index)."""
        for i, record in enumerate(records, 1):
            if not isinstance(record, dict):
                raise DataError("input", f"expected a dict, got {type(record).__name__}", i)
            self.validate_record(record, "input", i)
        return list(self.predict_records(records, batch_size))

    def _predict_texts(self, inputs: str | Sequence[str], field: str, batch_size: int | None = None) -> Any:
        """`field` of the predictions for one text, or a list of them for a list of texts (batched)."""
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        out = [r[field] for r in self.predict_checked([{"text": t} for t in texts], batch_size)]
        return out[0] if single else out

    def preprocess(self, record: dict[str, Any]) -> list[Any]:
        """A validated record -> the pieces the model reads (e.g. one per window of a long text)."""
        raise NotImplementedError

    def piece_length(self, piece: Any) -> int:
        """Sort key of a piece: pieces of similar length share a batch (less padding)."""
        return 0

    def forward(self, pieces: list[Any], **params: Any) -> list[Any]:
        """One batch of pieces -> one output per piece (called under no_grad, model in eval mode)."""
        raise NotImplementedError

    def forward_params(self) -> dict[str, Any]:
        """Settings of `forward` made once per `predict_records` call (e.g. a freshly seeded sampler)."""
        return {}

    def postprocess(self, record: dict[str, Any], parts: list[tuple[Any, Any]]) -> dict[str, Any]:
        """The record with its predictions added, from its (piece, output) pairs in piece order."""
        raise NotImplementedError

    def predict_records(
        self, records: Iterable[dict[str, Any]], batch_size: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Input records -> the same records with predictions added, in input order.

        Records are read a chunk at a time (CHUNK_BATCHES batches, so sorting by length has room to work); the
        pieces of a chunk run through `run_pieces` and are handed back to their records.
        """
        bs = batch_size or self.config.inference.batch_size  # type: ignore[attr-defined]
        params = self.forward_params()
        it = iter(records)
        while chunk := _next_chunk(it, CHUNK_BATCHES * bs):
            pieces = [(r, piece) for r, record in enumerate(chunk) for piece in self.preprocess(record)]
            outputs = self.run_pieces([piece for _, piece in pieces], bs, **params)
            parts: list[list[tuple[Any, Any]]] = [[] for _ in chunk]
            for (r, piece), out in zip(pieces, outputs):
                parts[r].append((piece, out))
            yield from (self.postprocess(record, p) for record, p in zip(chunk, parts))

    def run_pieces(self, pieces: list[Any], batch_size: int, **params: Any) -> list[Any]:
        """`forward` over pieces sorted by length, `batch_size` at a time; outputs in the pieces' order."""
        order = sorted(range(len(pieces)), key=lambda k: self.piece_length(pieces[k]))
        outputs: list[Any] = [None] * len(pieces)
        self.model.eval()
        from ..device import autocast

        with torch.no_grad(), autocast(self.device, self.precision):
            for s in range(0, len(order), batch_size):
                batch = order[s : s + batch_size]
                for k, out in zip(batch, self.forward([pieces[k] for k in batch], **params)):
                    outputs[k] = out
        return outputs

    @staticmethod
    def text_pieces(text: str, cuts: list[Window]) -> list[TextPiece]:
        """The pieces of a text cut into windows (an empty text has none)."""
        return [TextPiece(text[w.start : w.end], w) for w in cuts if w.end > w.start]

    # --- evaluation ---------------------------------------------------------------------
    def evaluate(self, examples: list[Any], batch_size: int | None = None) -> dict[str, Any]:
        """Metrics on gold examples; must include `main_metric`."""
        raise NotImplementedError

    def evaluate_errors(
        self, examples: list[Any], batch_size: int | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """`evaluate`'s metrics and, from the same predictions, every false positive and false negative as a
        JSON-ready dict with its text (`evaluate --errors`, for error analysis)."""
        raise ConfigError(f"the {self.name} task has no false positives and negatives to list (--errors: ner, ie, qa)")

    @classmethod
    def report(cls, metrics: dict[str, Any], title: str) -> Report:
        """Metrics as one table (`evaluate` prints it, `--report` writes it): one row per metric by default;
        tasks with per-type P/R/F1 give a row per type and the micro and macro rows."""
        return metrics_report(metrics, title)

    @classmethod
    def render_metrics(cls, metrics: dict[str, Any], title: str) -> RenderableType:
        """Metrics as a table for the terminal."""
        return render(cls.report(metrics, title))


def _next_chunk(records: Iterator[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """Up to `size` records; fewer when the input stalls with some in hand (a STALL marker), so a slow
    producer gets its answers without waiting for a full chunk."""
    chunk: list[dict[str, Any]] = []
    for record in records:
        if record is STALL:
            if chunk:
                break
            continue
        chunk.append(record)
        if len(chunk) >= size:
            break
    return chunk


def _renamed(state: dict[str, torch.Tensor], prefixes: dict[str, str]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for old, new in prefixes.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out
