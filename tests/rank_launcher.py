"""fairseq-train for one rank that also saves this rank's parameters at every checkpoint.

Only rank 0 writes fairseq checkpoints; the distributed tests compare the ranks' own
copies, written as ``rank<R>.pt`` in the save directory.
"""

import torch
from fairseq import checkpoint_utils
from fairseq_cli import train

import fairseq_maligan  # noqa: F401  (the plugin, as --user-dir would load it)
from fairseq_maligan.errors import install_excepthook

stock_save_checkpoint = checkpoint_utils.save_checkpoint


def save_checkpoint(cfg, trainer, epoch_itr, val_loss):
    state = {
        "model": trainer.get_model().state_dict(),
        "criterion": trainer.get_criterion().state_dict(),
        "num_updates": trainer.get_num_updates(),
    }
    torch.save(state, f"{cfg.save_dir}/rank{trainer.data_parallel_rank}.pt")
    return stock_save_checkpoint(cfg, trainer, epoch_itr, val_loss)


checkpoint_utils.save_checkpoint = save_checkpoint

if __name__ == "__main__":
    install_excepthook()  # one-line errors, as under fairseq-train
    train.cli_main()
