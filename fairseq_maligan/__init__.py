"""fairseq-maligan: MaliGAN and SeqGAN training of stock fairseq generators.

Load with ``--user-dir path/to/fairseq_maligan``. Importing registers the criteria
(``maligan_mixed``, ``maligan_rollout``, ``seqgan``), the tasks
(``maligan_language_modeling``, ``maligan_translation``), the discriminators
(``cnn_discriminator``, ``rnn_discriminator``) and ``--optimizer maligan_adam``.
"""

from . import patches
from .errors import fairseq_command_line, install_excepthook

patches.apply()
if fairseq_command_line():
    install_excepthook()

from . import criterions, discriminators, optim, tasks  # noqa: E402,F401
