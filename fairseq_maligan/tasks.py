"""``maligan_language_modeling``: the stock ``language_modeling`` task plus what
adversarial training needs. Its validation adds sample-based figures to the stock
validation loss: the discriminator's accuracy on valid rows and on generated rows,
the mean sample length, and NLL-oracle when ``--oracle-path`` names a synthetic oracle.
Checkpoints are saved under the stock task's name (see ``patches``).
"""

import os
from dataclasses import dataclass, field
from typing import Optional

from fairseq.tasks import register_task
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask

from .errors import ConfigError
from .oracle import Oracle
from .patches import STOCK_TASKS


@dataclass
class MaliganLanguageModelingConfig(LanguageModelingConfig):
    oracle_path: Optional[str] = field(
        default=None,
        metadata={"help": "synthetic oracle (scripts/make_oracle_data.py): report NLL-oracle"},
    )


class SampleStatisticsMixin:
    """Validation that adds the criterion's sample statistics (and NLL-oracle)."""

    oracle: Optional[Oracle] = None

    def valid_step(self, sample, model, criterion):
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        if hasattr(criterion, "sample_statistics"):
            stats = criterion.sample_statistics(model, sample)
            rows = stats.pop("_rows")
            logging_output.update(stats)
            if self.oracle is not None:
                logging_output.update(self.oracle.score_rows(rows, self.oracle_table))
        return loss, sample_size, logging_output

    def load_oracle(self, path: Optional[str]) -> None:
        if path:
            self.oracle = Oracle.load(path)
            self.oracle_table = self.oracle.ids_for(self.target_dictionary)


def check_data_dir(data: str) -> None:
    """A missing data directory is named in one line, not found deep inside fairseq."""
    for path in str(data).split(os.pathsep):
        if not os.path.isdir(path):
            raise ConfigError(f"data directory not found: {path}")


@register_task("maligan_language_modeling", dataclass=MaliganLanguageModelingConfig)
class MaliganLanguageModelingTask(SampleStatisticsMixin, LanguageModelingTask):
    """Language modelling with a discriminator-owning criterion (``maligan_mixed``, ...)."""

    def __init__(self, args, dictionary, output_dictionary=None, targets=None):
        super().__init__(args, dictionary, output_dictionary, targets)
        self.load_oracle(getattr(args, "oracle_path", None))

    @classmethod
    def setup_task(cls, args, **kwargs):
        check_data_dir(args.data)
        return super().setup_task(args, **kwargs)


STOCK_TASKS["maligan_language_modeling"] = "language_modeling"
