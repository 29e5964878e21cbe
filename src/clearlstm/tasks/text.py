"""Character-level language modelling: read a text, train, report bits per character, sample.

The text is split in time: the first 90% for training, the rest for validation. Training
reads non-overlapping pieces of ``T + 1`` characters; the model predicts each next
character. Bits per character is the validation cross-entropy in base 2 (lower is better; a
model that knew nothing would score ``log2(V)``). Shapes: ``S`` pieces, ``T`` steps,
``V`` vocabulary size.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from clearlstm.core.trace import UnitMemory
from clearlstm.tasks import lstm_settings
from clearlstm.tasks.datasets import get_dataset
from clearlstm.tasks.models import CharModel
from clearlstm.tasks.settings import (
    EXAMPLE_CHARS,
    CharModelResult,
    CharModelSettings,
    CharModelShape,
    TextDataSettings,
    finite_or_none,
    read_settings,
)
from clearlstm.tasks.settings_base import check_option
from clearlstm.train import checkpoint
from clearlstm.train.distributed import Distributed
from clearlstm.train.lock import training_lock
from clearlstm.train.loop import FitResult, Reporter, TrainConfig, fit


@dataclass(frozen=True)
class TextOptions:
    """What to read and the model's shape (``clearlstm train --text`` flags)."""

    text: str | None = None
    dataset: str | None = None
    seq_len: int = 100
    embedding_size: int = 32
    hidden_size: int = 256
    num_layers: int = 1
    val_fraction: float = 0.1
    lstm: dict | None = None  # the LSTM's variant arguments (clearlstm.nn.variants.DEFAULTS)


@dataclass
class TextRun:
    settings: CharModelSettings
    bits_per_char: float
    memory: list[UnitMemory]
    fit: FitResult
    seconds: float
    sample: str


def read_text(path: str | Path) -> str:
    """The whole file as UTF-8 text, or a clear error (missing, empty, not UTF-8)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; expected a text file")
    return decode_text(path.read_bytes(), path)


def decode_text(data: bytes, path: Path) -> str:
    """``data`` (the bytes of ``path``) as UTF-8 text, or a clear error."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}, line {line}: not UTF-8 text (byte {data[error.start]:#04x} at offset "
            f"{error.start}); convert it first, e.g. iconv -f latin1 -t utf-8 {path.name}"
        ) from None
    if not text.strip():
        raise ValueError(f"{path} is empty; expected some text to learn from")
    return text


def encode(text: str, vocabulary: str) -> Tensor:
    """``(len(text),)`` int64 ids of the characters of ``text`` in ``vocabulary``."""
    index = {ch: i for i, ch in enumerate(vocabulary)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        raise ValueError(
            f"characters the model never saw: {''.join(unknown)!r}; use only characters of its "
            "training text"
        )
    return torch.tensor([index[ch] for ch in text], dtype=torch.long)


PieceSet = tuple[Tensor, Tensor]  # inputs and next-character truths, both (S, T)


def pieces(ids: Tensor, seq_len: int) -> PieceSet:
    """Inputs and next-character truths, both ``(S, T)``, from non-overlapping pieces."""
    count = (len(ids) - 1) // seq_len
    x = ids[: count * seq_len].view(count, seq_len)
    y = ids[1 : count * seq_len + 1].view(count, seq_len)
    return x, y


def piece_loss(model: torch.nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per-piece mean cross-entropy in nats: ``(B,)``."""
    logits, _ = model(x)  # (B, T, V)
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(dim=1)


def prepare_text(options: TextOptions) -> tuple[Path, str, str, PieceSet, PieceSet]:
    """The text's path, the text, its vocabulary (sorted characters) and the training and
    validation pieces ``(S, T)`` as :func:`train_text` trains on them."""
    if options.dataset is not None:
        dataset = get_dataset(options.dataset)
        if dataset.kind != "text":
            raise ValueError(f"dataset {dataset.name!r} is a series, not a text")
        path = dataset.path
    else:
        path = Path(options.text)
    text = read_text(path)
    if options.seq_len < 1:
        raise ValueError(
            f"--window (characters per piece) must be at least 1; got {options.seq_len}"
        )
    vocabulary = "".join(sorted(set(text)))
    ids = encode(text, vocabulary)
    cut = int(len(ids) * (1 - options.val_fraction))
    train, val = pieces(ids[:cut], options.seq_len), pieces(ids[cut:], options.seq_len)
    if len(train[0]) < 1 or len(val[0]) < 1:
        need = math.ceil((options.seq_len + 1) / options.val_fraction)
        raise ValueError(
            f"{path}: {len(text)} characters are too few for pieces of --window "
            f"{options.seq_len}: the validation part ({options.val_fraction:.0%}) needs a whole "
            f"piece, so at least {need} characters; use a shorter --window or a longer text"
        )
    return path, text, vocabulary, train, val


def train_text(
    options: TextOptions,
    config: TrainConfig,
    out_dir: Path,
    resume: bool = False,
    reporter: Reporter | None = None,
    context: Distributed | None = None,
) -> TextRun | None:
    """Train a character model, save it to ``out_dir``; None on processes other than rank 0."""
    context = context or Distributed()
    started = time.perf_counter()
    check_option("--hidden-size", CharModelShape, "hidden_size", options.hidden_size)
    check_option("--layers", CharModelShape, "num_layers", options.num_layers)
    check_option("embedding_size", CharModelShape, "embedding_size", options.embedding_size)
    path, text, vocabulary, train, val = prepare_text(options)
    variant = lstm_settings.for_training(options.lstm, options.seq_len)
    torch.manual_seed(config.seed)
    model = CharModel(
        len(vocabulary), options.embedding_size, options.hidden_size, options.num_layers,
        variant.kwargs(),
    )  # fmt: skip
    shape, described = _settings(options, path, lstm_settings.LstmSettings.of(model.lstm))
    fingerprint = {"model": shape.to_json(), "data": described.to_json()}
    with training_lock(out_dir) if context.is_main else contextlib.nullcontext():
        result = fit(
            model, train, val, piece_loss, config, out_dir, fingerprint, resume, reporter, context
        )
        if not context.is_main:
            return None
        model.load_state_dict(result.weights)
        model.eval()
        bpc = result.best_val / math.log(2)
        memory = model.trace(val[0][:64]).memory_summary()
        summary = CharModelResult(
            best_epoch=result.best_epoch,
            epochs_run=result.epochs_run,
            val_bits_per_char=finite_or_none(bpc),
        )
        weights = checkpoint.encode_weights(model.state_dict())
        settings = CharModelSettings(
            model=shape, data=described, vocabulary=vocabulary, train=config, result=summary,
            weights_sha256=checkpoint.sha256(weights), example=text[:EXAMPLE_CHARS],
        )  # fmt: skip
        document = settings.to_json()
        CharModelSettings.from_json(document)  # what is written must load again
        checkpoint.save_model(out_dir, weights, document)
    sample = generate(model, vocabulary, text[:40], 200, 0.8, seed=config.seed)
    return TextRun(settings, bpc, memory, result, time.perf_counter() - started, sample)


def _settings(
    options: TextOptions, path: Path, lstm: lstm_settings.LstmSettings
) -> tuple[CharModelShape, TextDataSettings]:
    shape = CharModelShape(
        embedding_size=options.embedding_size,
        hidden_size=options.hidden_size,
        num_layers=options.num_layers,
        lstm=lstm,
    )
    data = TextDataSettings(
        dataset=options.dataset,
        text=None if options.dataset else str(path.resolve()),
        seq_len=options.seq_len,
        val_fraction=options.val_fraction,
    )
    return shape, data


def load_char_model(path: str | Path) -> tuple[CharModel, CharModelSettings]:
    """A trained character model and its settings, checked on the way in."""
    settings, directory = read_settings(path)
    if not isinstance(settings, CharModelSettings):
        raise checkpoint.CheckpointError(
            f"{directory} holds a {settings.kind} model, not a text model "
            "(train one with `clearlstm train --text FILE`)"
        )
    shapes = settings.weight_shapes()
    weights = checkpoint.load_weights(directory, shapes, settings.weights_sha256)
    model = CharModel.from_settings(settings)
    model.load_state_dict(weights)
    return model.eval(), settings


def generate(
    model: CharModel, vocabulary: str, prompt: str, length: int, temperature: float, seed: int = 0
) -> str:
    """``prompt`` followed by ``length`` sampled characters.

    Temperature divides the logits: below 1 sharper and more repetitive, above 1 more varied;
    0 always takes the most likely character.
    """
    if not prompt:
        raise ValueError("--prompt must hold at least one character")
    if length < 0:
        raise ValueError(f"--length must be at least 0; got {length}")
    if temperature < 0 or not math.isfinite(temperature):
        raise ValueError(f"--temperature must be 0 or more; got {temperature}")
    ids = encode(prompt, vocabulary)[None]  # (1, T)
    generator = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        logits, state = model(ids)
        for _ in range(length):
            last = logits[0, -1]  # (V,)
            if temperature == 0:
                nxt = int(last.argmax())
            else:
                probs = torch.softmax(last.double() / temperature, dim=0)
                nxt = int(torch.multinomial(probs, 1, generator=generator))
            out.append(vocabulary[nxt])
            logits, state = model(torch.tensor([[nxt]]), state)
    return prompt + "".join(out)
