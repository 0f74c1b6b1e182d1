"""Discriminators D(x) = sigmoid(logit): registered fairseq models, owned by a criterion.

``cnn_discriminator`` is SeqGAN's text CNN (several filter widths, max-over-time,
highway); ``rnn_discriminator`` is the MaliGAN paper's bidirectional GRU/LSTM. Both
read target-side rows (tokens then padding) and, when ``conditional`` (translation),
also the source sentence through an encoder of the same kind.
"""

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from fairseq.data import Dictionary
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import MODEL_REGISTRY, BaseFairseqModel, register_model
from torch import Tensor, nn

DISCRIMINATOR_ARCHS: list[str] = []


@dataclass
class MaliganDiscriminatorConfig(FairseqDataclass):
    embed_dim: int = field(default=64, metadata={"help": "token embedding size"})
    hidden_dim: int = field(
        default=64, metadata={"help": "RNN hidden size per direction, or CNN filters per width"}
    )
    num_layers: int = field(default=1, metadata={"help": "RNN layers (RNN only)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout before the output layer"})
    cell: ChoiceEnum(["gru", "lstm"]) = field(  # type: ignore[valid-type]
        default="gru", metadata={"help": "recurrent cell (RNN only)"}
    )
    filter_sizes: str = field(
        default="2,3,4,5", metadata={"help": "comma-separated filter widths (CNN only)"}
    )
    conditional: bool = field(
        default=False, metadata={"help": "also read the source sentence (translation)"}
    )


def right_padded(tokens: Tensor, pad: int) -> Tensor:
    """Rows with their padding moved to the right (fairseq left-pads sources)."""
    order = tokens.eq(pad).to(torch.int8).argsort(dim=1, stable=True)
    return tokens.gather(1, order)


class CnnEncoder(nn.Module):
    """Text CNN: filters of several widths, ReLU, max over time, one highway layer."""

    def __init__(self, dictionary: Dictionary, cfg: MaliganDiscriminatorConfig) -> None:
        super().__init__()
        self.padding_idx = dictionary.pad()
        self.embed = nn.Embedding(len(dictionary), cfg.embed_dim, padding_idx=self.padding_idx)
        self.widths = [int(w) for w in str(cfg.filter_sizes).split(",")]
        self.convs = nn.ModuleList(
            nn.Conv1d(cfg.embed_dim, cfg.hidden_dim, w) for w in self.widths
        )
        self.output_dim = cfg.hidden_dim * len(self.widths)
        self.highway = nn.Linear(self.output_dim, 2 * self.output_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(right_padded(tokens, self.padding_idx)).transpose(1, 2)
        short = max(self.widths) - x.size(2)
        if short > 0:
            x = F.pad(x, (0, short))
        pooled = torch.cat([F.relu(conv(x)).amax(dim=2) for conv in self.convs], dim=1)
        transform, gate = self.highway(pooled).chunk(2, dim=1)
        gate = torch.sigmoid(gate)
        return gate * F.relu(transform) + (1 - gate) * pooled


class RnnEncoder(nn.Module):
    """Bidirectional GRU/LSTM; the features are the last layer's final states."""

    def __init__(self, dictionary: Dictionary, cfg: MaliganDiscriminatorConfig) -> None:
        super().__init__()
        self.padding_idx = dictionary.pad()
        self.embed = nn.Embedding(len(dictionary), cfg.embed_dim, padding_idx=self.padding_idx)
        rnn = nn.GRU if cfg.cell == "gru" else nn.LSTM
        self.rnn = rnn(
            cfg.embed_dim, cfg.hidden_dim, num_layers=cfg.num_layers,
            batch_first=True, bidirectional=True,
        )
        self.output_dim = 2 * cfg.hidden_dim

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


class Discriminator(BaseFairseqModel):
    """Logit of "real" for each target-side row, optionally given its source."""

    encoder_class: type[nn.Module] = nn.Module

    def __init__(
        self,
        cfg: MaliganDiscriminatorConfig,
        dictionary: Dictionary,
        source_dictionary: Optional[Dictionary] = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.target_encoder = self.encoder_class(dictionary, cfg)
        features = self.target_encoder.output_dim
        self.source_encoder = None
        if cfg.conditional:
            self.source_encoder = self.encoder_class(source_dictionary or dictionary, cfg)
            features += self.source_encoder.output_dim
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(features, 1)

    @classmethod
    def build_model(cls, cfg: MaliganDiscriminatorConfig, task) -> "Discriminator":
        return cls(cfg, task.target_dictionary, task.source_dictionary)

    def forward(self, tokens: Tensor, src_tokens: Optional[Tensor] = None) -> Tensor:
        """Logits (rows,) that each row of ``tokens`` is real data."""
        features = self.target_encoder(tokens)
        if self.source_encoder is not None:
            if src_tokens is None:
                raise ValueError("a conditional discriminator needs the source tokens")
            features = torch.cat([features, self.source_encoder(src_tokens)], dim=1)
        return self.output(self.dropout(features)).squeeze(1)


def _register(name: str):
    def wrap(cls):
        DISCRIMINATOR_ARCHS.append(name)
        return register_model(name, dataclass=MaliganDiscriminatorConfig)(cls)

    return wrap


@_register("cnn_discriminator")
class CnnDiscriminator(Discriminator):
    encoder_class = CnnEncoder


@_register("rnn_discriminator")
class RnnDiscriminator(Discriminator):
    encoder_class = RnnEncoder


def build_discriminator(
    arch: str,
    cfg: MaliganDiscriminatorConfig,
    dictionary: Dictionary,
    source_dictionary: Optional[Dictionary] = None,
) -> Discriminator:
    """Build the registered discriminator ``arch``; unknown names name the option."""
    if arch not in DISCRIMINATOR_ARCHS:
        raise ValueError(
            f"--disc-arch: unknown discriminator '{arch}'; choose one of "
            f"{', '.join(DISCRIMINATOR_ARCHS)}"
        )
    return MODEL_REGISTRY[arch](cfg, dictionary, source_dictionary)
