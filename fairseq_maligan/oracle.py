"""The synthetic oracle of SeqGAN's benchmark: a seeded random LSTM language model.

It generates fixed-length sequences over the symbols ``w0 .. w{V-1}``; a generator
trained on them is scored by NLL-oracle (the oracle's per-token NLL of the generator's
samples, lower is better). Saved as plain tensors and numbers, so it loads with torch's
safe ``weights_only`` loading.
"""

from __future__ import annotations

import torch
from fairseq.data import Dictionary
from torch import Tensor, nn

from .files import ORACLE, load_file

EOS_ID = -2
"""The id that :meth:`Oracle.ids_for` gives the dictionary's EOS (other non-oracle symbols: -1)."""


def oracle_symbol(index: int) -> str:
    return f"w{index}"


class Oracle(nn.Module):
    """LSTM LM with N(0, 1) weights (as in SeqGAN), a start symbol and a fixed length."""

    def __init__(
        self,
        vocab_size: int,
        seq_len: int = 20,
        embed_dim: int = 32,
        hidden_dim: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.vocab_size, self.seq_len = vocab_size, seq_len
        self.embed_dim, self.hidden_dim = embed_dim, hidden_dim
        self.embed = nn.Embedding(vocab_size + 1, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.output = nn.Linear(hidden_dim, vocab_size)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=generator))

    @property
    def start(self) -> int:
        return self.vocab_size

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """``num`` sequences of oracle ids (num, seq_len)."""
        tokens = torch.full((num, 1), self.start, dtype=torch.long)
        state = None
        out = []
        for _ in range(self.seq_len):
            hidden, state = self.lstm(self.embed(tokens[:, -1:]), state)
            probs = torch.softmax(self.output(hidden[:, -1]), dim=-1)
            step = torch.multinomial(probs, 1, generator=generator)
            out.append(step)
            tokens = torch.cat([tokens, step], dim=1)
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def nll(self, ids: Tensor) -> Tensor:
        """Per-token NLL (num, length) of oracle-id sequences, in nats."""
        start = torch.full((ids.size(0), 1), self.start, dtype=torch.long)
        inputs = torch.cat([start, ids[:, :-1]], dim=1)
        hidden, _ = self.lstm(self.embed(inputs))
        lprobs = torch.log_softmax(self.output(hidden), dim=-1)
        return -lprobs.gather(-1, ids.unsqueeze(-1)).squeeze(-1)

    def save(self, path: str) -> None:
        config = {
            "vocab_size": self.vocab_size, "seq_len": self.seq_len,
            "embed_dim": self.embed_dim, "hidden_dim": self.hidden_dim,
        }
        torch.save({"config": config, "state": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str, option: str = "--oracle-path") -> Oracle:
        """The oracle saved by :meth:`save`; a bad file is a one-line error naming
        ``option``, the command-line option that gave ``path``."""
        saved = load_file(path, option, ORACLE)
        oracle = cls(**saved["config"])
        oracle.load_state_dict(saved["state"])
        return oracle

    def ids_for(self, dictionary: Dictionary) -> Tensor:
        """Map fairseq dictionary indices to oracle ids (``EOS_ID`` for EOS, -1 for others)."""
        table = torch.full((len(dictionary),), -1, dtype=torch.long)
        table[dictionary.eos()] = EOS_ID
        for index in range(self.vocab_size):
            found = dictionary.index(oracle_symbol(index))
            if found != dictionary.unk():
                table[found] = index
        return table

    def valid_rows(self, ids: Tensor) -> Tensor:
        """Which rows of mapped ids (:meth:`ids_for`) are exactly an oracle sequence.

        A valid row is ``seq_len`` oracle symbols followed by EOS (what follows EOS, the
        sampler's padding, is ignored). Rows that end early, run on past ``seq_len`` or
        lack EOS, or hold other symbols, are invalid.
        """
        if ids.size(1) <= self.seq_len:
            return torch.zeros(ids.size(0), dtype=torch.bool, device=ids.device)
        return ids[:, : self.seq_len].ge(0).all(dim=1) & ids[:, self.seq_len].eq(EOS_ID)

    def score_rows(self, rows: Tensor, table: Tensor) -> dict[str, Tensor | int]:
        """NLL-oracle sums of generated target-side rows (fairseq indices).

        ``table`` is :meth:`ids_for` of the rows' dictionary. Rows that are not exactly an
        oracle sequence (:meth:`valid_rows`) are counted as invalid and left out of the NLL.
        """
        ids = table.to(rows.device)[rows]
        valid = self.valid_rows(ids)
        nll = (self.nll(ids[valid, : self.seq_len]) if bool(valid.any())
               else torch.zeros(0, self.seq_len))
        return {
            "oracle_nll_sum": nll.sum(),
            "oracle_tokens": nll.numel(),
            "oracle_invalid_rows": int((~valid).sum()),
            "oracle_rows": rows.size(0),
        }
