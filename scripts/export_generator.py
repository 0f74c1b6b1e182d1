"""Write a copy of a checkpoint that fairseq's ``from_pretrained`` loads without the plugin.

    python scripts/export_generator.py checkpoints/maligan/checkpoint_best.pt generator.pt

The copy keeps the generator's weights and configuration only: the criterion state (the
discriminator, a rollout policy), the optimizer state and the training meters are
dropped, the task is the stock one (``language_modeling`` or ``translation``) and a
legacy architecture's config is a plain dict, so it loads with torch's safe
``weights_only`` loading. Then, for example:

    TransformerLanguageModel.from_pretrained(folder, "generator.pt", data_name_or_path=DATA)
"""

import argparse

import torch

from fairseq_maligan.errors import install_excepthook, output_file
from fairseq_maligan.files import GENERATOR, load_file
from fairseq_maligan.patches import check_config_strings, stock_checkpoint_cfg


def export(source: str, target: str) -> None:
    """Save the stock generator of checkpoint ``source`` to ``target``."""
    state = load_file(source, "checkpoint", GENERATOR)
    check_config_strings(state, source)
    history = state.get("optimizer_history") or [{}]
    exported = {
        "args": None,
        "cfg": stock_checkpoint_cfg(state["cfg"]),
        "model": state["model"],
        "criterion": None,
        "optimizer_history": [{
            "criterion_name": "CrossEntropyCriterion",
            "optimizer_name": history[-1].get("optimizer_name", "FairseqAdam"),
            "lr_scheduler_state": {},
            "num_updates": history[-1].get("num_updates", 0),
        }],
        "task_state": {},
        "extra_state": {},
    }
    torch.save(exported, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="generator checkpoint to export")
    parser.add_argument("output", type=output_file, help="file for the exported copy")
    args = parser.parse_args()
    export(args.checkpoint, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    install_excepthook()
    main()
