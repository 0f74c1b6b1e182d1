"""The discriminator D(x) = sigmoid(logit): its architectures, options, rows, loss and file.

Everything about D lives here, so that every criterion and script builds, feeds, trains
and saves it the same way:

- ``DiscriminatorConfig``: the ``--disc-*`` options, declared once (the criteria inherit
  it; ``scripts/pretrain_discriminator.py`` turns it into its own parser);
- ``DISCRIMINATORS``: a plain registry of architectures (not fairseq's model registry,
  so a discriminator can never be mistaken for a generator ``--arch``):
  ``cnn_discriminator`` is SeqGAN's text CNN (several filter widths, max-over-time,
  highway), ``rnn_discriminator`` the MaliGAN paper's bidirectional GRU/LSTM;
- :func:`format_rows`: the one path by which real, sampled and rollout rows reach D.
  Both architectures ignore padding (the RNN packs the rows, the CNN pools only over
  windows inside the row), so a row's logit does not depend on the batch it sits in;
- :func:`discriminator_bce`, :func:`save_discriminator`, :func:`load_discriminator`.

When ``conditional`` (translation), D also reads the source sentence through an encoder of
the same kind.
"""


from dataclasses import dataclass, field, fields
from typing import Optional

import torch
import torch.nn.functional as F
from fairseq.data import Dictionary
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from torch import Tensor, nn

from .errors import ConfigError
from .files import DISCRIMINATOR, load_file


def right_padded(tokens: Tensor, pad: int) -> Tensor:
    """Rows with their padding moved to the right (fairseq left-pads sources)."""
    order = tokens.eq(pad).to(torch.int8).argsort(dim=1, stable=True)
    return tokens.gather(1, order)


def format_rows(rows: Tensor, pad: int, max_len: int) -> Tensor:
    """Target-side rows as D reads them: right-padded, cut at ``max_len``, no empty column.

    Real rows, sampled rows and rollout completions all pass through here, so a real row
    longer than the samples' length cap is cut exactly where a sample would be.
    """
    rows = right_padded(rows, pad)[:, :max_len]
    width = max(int(rows.ne(pad).sum(dim=1).max()), 1) if rows.numel() else 1
    return rows[:, :width]


def parse_filter_sizes(text: str) -> list[int]:
    """``--disc-filter-sizes`` as a list of positive widths, or a one-line error."""
    try:
        widths = [int(part) for part in str(text).split(",")]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise ConfigError(
            f"--disc-filter-sizes must be comma-separated positive integers, got {text!r}"
        )
    return widths


class CnnEncoder(nn.Module):
    """Text CNN: filters of several widths, ReLU, max over time, one highway layer.

    The max runs over the windows that lie inside the row (the first window only, for a
    row shorter than the filter), so trailing padding never reaches the features.
    """

    def __init__(self, dictionary: Dictionary, cfg: "DiscriminatorConfig") -> None:
        super().__init__()
        self.padding_idx = dictionary.pad()
        self.embed = nn.Embedding(
            len(dictionary), cfg.disc_embed_dim, padding_idx=self.padding_idx
        )
        self.widths = parse_filter_sizes(cfg.disc_filter_sizes)
        self.convs = nn.ModuleList(
            nn.Conv1d(cfg.disc_embed_dim, cfg.disc_hidden_dim, w) for w in self.widths
        )
        self.output_dim = cfg.disc_hidden_dim * len(self.widths)
        self.highway = nn.Linear(self.output_dim, 2 * self.output_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        tokens = right_padded(tokens, self.padding_idx)
        lengths = tokens.ne(self.padding_idx).sum(dim=1, keepdim=True)
        x = self.embed(tokens).transpose(1, 2)
        x = F.pad(x, (0, max(0, max(self.widths) - x.size(2))))
        pooled = []
        for width, conv in zip(self.widths, self.convs):
            out = F.relu(conv(x))
            starts = torch.arange(out.size(2), device=out.device)
            inside = starts < (lengths - width + 1).clamp(min=1)
            pooled.append(out.masked_fill(~inside.unsqueeze(1), 0.0).amax(dim=2))
        pooled = torch.cat(pooled, dim=1)
        transform, gate = self.highway(pooled).chunk(2, dim=1)
        gate = torch.sigmoid(gate)
        return gate * F.relu(transform) + (1 - gate) * pooled


class RnnEncoder(nn.Module):
    """Bidirectional GRU/LSTM over the packed rows; the features are the final states."""

    def __init__(self, dictionary: Dictionary, cfg: "DiscriminatorConfig") -> None:
        super().__init__()
        self.padding_idx = dictionary.pad()
        self.embed = nn.Embedding(
            len(dictionary), cfg.disc_embed_dim, padding_idx=self.padding_idx
        )
        rnn = nn.GRU if cfg.disc_cell == "gru" else nn.LSTM
        self.rnn = rnn(
            cfg.disc_embed_dim, cfg.disc_hidden_dim, num_layers=cfg.disc_layers,
            batch_first=True, bidirectional=True,
        )
        self.output_dim = 2 * cfg.disc_hidden_dim

    def forward(self, tokens: Tensor) -> Tensor:
        tokens = right_padded(tokens, self.padding_idx)
        lengths = tokens.ne(self.padding_idx).sum(dim=1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(tokens), lengths, batch_first=True, enforce_sorted=False
        )
        _, hidden = self.rnn(packed)
        if isinstance(hidden, tuple):
            hidden = hidden[0]
        return torch.cat([hidden[-2], hidden[-1]], dim=1)


DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "cnn_discriminator": CnnEncoder,
    "rnn_discriminator": RnnEncoder,
}
"""Architecture name -> the encoder class that turns rows into features."""


@dataclass
class DiscriminatorConfig(FairseqDataclass):
    """The discriminator's architecture (``--disc-*``), declared once for every user."""

    disc_arch: ChoiceEnum(list(DISCRIMINATORS)) = field(  # type: ignore[valid-type]
        default="rnn_discriminator", metadata={"help": "discriminator architecture"}
    )
    disc_embed_dim: int = field(default=64, metadata={"help": "discriminator embedding size"})
    disc_hidden_dim: int = field(
        default=64,
        metadata={"help": "discriminator RNN size per direction, or CNN filters per width"},
    )
    disc_layers: int = field(default=1, metadata={"help": "discriminator RNN layers"})
    disc_cell: ChoiceEnum(["gru", "lstm"]) = field(  # type: ignore[valid-type]
        default="gru", metadata={"help": "discriminator RNN cell"}
    )
    disc_filter_sizes: str = field(
        default="2,3,4,5", metadata={"help": "discriminator CNN filter widths"}
    )
    disc_dropout: float = field(
        default=0.1, metadata={"help": "discriminator dropout before its output layer"}
    )


def validate_discriminator(cfg: DiscriminatorConfig) -> None:
    """One-line errors for ``--disc-*`` values that cannot build a discriminator."""
    if str(cfg.disc_arch) not in DISCRIMINATORS:
        raise ConfigError(
            f"--disc-arch: unknown discriminator {str(cfg.disc_arch)!r}; choose one of "
            f"{', '.join(DISCRIMINATORS)}"
        )
    for name in ("disc_embed_dim", "disc_hidden_dim", "disc_layers"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not 0.0 <= cfg.disc_dropout < 1.0:
        raise ConfigError(f"--disc-dropout must be in [0, 1), got {cfg.disc_dropout}")
    parse_filter_sizes(cfg.disc_filter_sizes)


ARCH_FIELDS = tuple(f.name for f in fields(DiscriminatorConfig) if f.name != "_name")


class Discriminator(nn.Module):
    """Logit of "real" for each target-side row, optionally given its source."""

    def __init__(
        self,
        cfg: DiscriminatorConfig,
        dictionary: Dictionary,
        source_dictionary: Optional[Dictionary] = None,
        conditional: bool = False,
    ) -> None:
        super().__init__()
        validate_discriminator(cfg)
        self.arch = {name: getattr(cfg, name) for name in ARCH_FIELDS}
        self.arch["disc_arch"] = str(cfg.disc_arch)
        self.arch["disc_cell"] = str(cfg.disc_cell)
        self.conditional = conditional
        encoder = DISCRIMINATORS[str(cfg.disc_arch)]
        self.target_encoder = encoder(dictionary, cfg)
        features = self.target_encoder.output_dim
        self.source_encoder = None
        if conditional:
            self.source_encoder = encoder(source_dictionary or dictionary, cfg)
            features += self.source_encoder.output_dim
        self.dropout = nn.Dropout(cfg.disc_dropout)
        self.output = nn.Linear(features, 1)

    def forward(self, tokens: Tensor, src_tokens: Optional[Tensor] = None) -> Tensor:
        """Logits (rows,) that each row of ``tokens`` is real data."""
        features = self.target_encoder(tokens)
        if self.source_encoder is not None:
            if src_tokens is None:
                raise ValueError("a conditional discriminator needs the source tokens")
            features = torch.cat([features, self.source_encoder(src_tokens)], dim=1)
        return self.output(self.dropout(features)).squeeze(1)


def discriminator_bce(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """L_D = -mean log D(y) - mean log(1 - D(x)), in logit form (never log(sigmoid))."""
    return F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def save_discriminator(disc: Discriminator, path: str) -> None:
    """Save a discriminator so that ``--disc-path`` (and ``weights_only`` loading) reads it."""
    torch.save(
        {"arch": dict(disc.arch), "conditional": disc.conditional, "model": disc.state_dict()},
        path,
    )


def load_discriminator(
    path: str, dictionary: Dictionary, source_dictionary: Optional[Dictionary] = None,
    conditional: bool = False,
) -> Discriminator:
    """A discriminator saved by :func:`save_discriminator` (safe ``weights_only`` load)."""
    state = load_file(path, "--disc-path", DISCRIMINATOR)
    arch = state["arch"]
    if not isinstance(arch, dict) or set(arch) != set(ARCH_FIELDS):
        raise ConfigError(
            f"--disc-path: {path} is a discriminator of another version of this plugin "
            f"(its --disc-* fields: {sorted(arch) if isinstance(arch, dict) else arch})"
        )
    if bool(state["conditional"]) != conditional:
        kind = "translation (conditional)" if state["conditional"] else "language-model"
        raise ConfigError(f"--disc-path: {path} is a {kind} discriminator; this task is not")
    disc = Discriminator(DiscriminatorConfig(**arch), dictionary, source_dictionary, conditional)
    own = disc.state_dict()
    for key, value in state["model"].items():
        if key in own and own[key].shape != value.shape:
            if key.endswith("embed.weight"):
                raise ConfigError(
                    f"--disc-path: {path} was trained with a dictionary of {value.shape[0]} "
                    f"symbols, the data has {own[key].shape[0]}"
                )
            raise ConfigError(
                f"--disc-path: {path} does not fit: {key} is {tuple(value.shape)} there, "
                f"{tuple(own[key].shape)} here"
            )
    missing = sorted(set(own) - set(state["model"]))
    if missing:
        raise ConfigError(f"--disc-path: {path} does not fit: it lacks {', '.join(missing[:3])}")
    disc.load_state_dict(state["model"])
    return disc


def build_discriminator(
    cfg: DiscriminatorConfig, dictionary: Dictionary,
    source_dictionary: Optional[Dictionary] = None, conditional: bool = False,
) -> Discriminator:
    """The discriminator in ``--disc-path`` if the config names one, else a new one."""
    path = getattr(cfg, "disc_path", None)
    if path:
        return load_discriminator(path, dictionary, source_dictionary, conditional)
    return Discriminator(cfg, dictionary, source_dictionary, conditional)
