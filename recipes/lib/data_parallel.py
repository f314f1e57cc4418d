"""Parameters that a trainer's loss does not reach, handled the same way by every recipe, for any model.

A stage's loss need not run the whole model: TRL's SFT, GRPO and GKD losses read the backbone through a fused LM
head or the logits, so DeepseekMini's multi-token-prediction (MTP) modules never run under them, and a user's model
may have a branch that a given objective skips. With one process, such a parameter just keeps no gradient and is
silently left as it was. With several, DDP's reducer waits for its gradient, and transformers decides how DDP copes
(`Trainer._build_accelerator_args`): `find_unused_parameters = not gradient_checkpointing`. So the same run
fails or not depending on checkpointing:

- checkpointing off: DDP searches the graph for unused parameters every step; the run trains, the parameter does
  not, and nothing says so;
- checkpointing on: DDP expects every parameter, the first backward leaves a bucket unreduced and the second step
  dies with `Expected to have finished reduction in the prior iteration`.

The choice made here, for every recipe's trainer (`tolerate_unreached_parameters` on the arguments before the
trainer is built, `UnreachedParametersCallback` on the trainer):

1. DDP always looks for unused parameters unless the user set `ddp_find_unused_parameters`, and activation
   checkpointing is non-reentrant unless the user chose otherwise. The reason transformers turns the search off
   under checkpointing is reentrant checkpointing (which re-enters autograd and marks a parameter ready twice);
   non-reentrant checkpointing, torch's recommended one, works with it. The search costs one walk of the autograd
   graph per step, small next to the backward, and it is what makes a model with an unreached part trainable at all
   on several processes. Freezing instead would need to know, before DDP wraps the model, what the loss will reach:
   that is known for the project's own cases (GRPO freezes the MTP modules up front, `grpo_trainer.py`) but not for
   any model under any TRL loss.
2. The trainable parameters that get no gradient on any process are named in a WARNING at the first optimizer step,
   and again at the end of training if they never got one: the stage does not train them, and the log says so
   rather than leaving them silently as they were. They are not frozen: a parameter can miss one step and not the
   next (an expert of a per-expert MoE that no token chose), and DDP copes with it either way. Where the objective
   should reach them, the recipe makes it do so (SFT of DeepseekMini trains the MTP modules through the model's own
   loss, as DeepSeek-V3 does: `recipes/lib/sft_trainer.py`).
"""

import logging

from transformers import TrainerCallback

logger = logging.getLogger(__name__)


def tolerate_unreached_parameters(training_args):
    """Set `training_args` so that DDP trains a model part of which the loss does not reach, with activation
    checkpointing on or off; returns them. Values the user set explicitly are kept."""
    checkpointing_kwargs = training_args.activation_checkpointing_kwargs or {}
    if checkpointing_kwargs and "use_reentrant" not in checkpointing_kwargs:
        # transformers checkpoints non-reentrantly when given no kwargs; other kwargs go to torch, whose default
        # may be reentrant: say it
        checkpointing_kwargs = {**checkpointing_kwargs, "use_reentrant": False}
        training_args.activation_checkpointing_kwargs = checkpointing_kwargs
        training_args.gradient_checkpointing_kwargs = checkpointing_kwargs  # the deprecated alias mirrors it
    if training_args.ddp_find_unused_parameters is None:
        if training_args.activation_checkpointing and checkpointing_kwargs.get("use_reentrant", False):
            logger.warning(
                "Reentrant activation checkpointing (use_reentrant=True) cannot search for unused parameters: under "
                "DDP, a parameter the loss does not reach will stop the run at its second step. Set "
                "activation_checkpointing_kwargs to {'use_reentrant': false} to train such a model."
            )
        else:
            training_args.ddp_find_unused_parameters = True
    return training_args


def unreached_parameters(model) -> list[str]:
    """Names of the trainable parameters of `model` that hold no gradient (after a backward: the loss missed them)."""
    return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]


class UnreachedParametersCallback(TrainerCallback):
    """Name in the log the trainable parameters that the loss does not reach: at the first optimizer step, and at
    the end of training those that never got a gradient (which the stage therefore did not train).

    DDP leaves the gradient of a parameter unused on every process untouched (None) and fills it on every process
    when one used it, so all processes see the same names."""

    def __init__(self):
        self.never_reached: set[str] | None = None  # None until the first optimizer step

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None or self.never_reached == set():  # everything was reached: nothing left to watch
            return
        missed = set(unreached_parameters(model))
        if self.never_reached is None:
            self.never_reached = missed
            if missed:
                logger.warning(
                    f"The training loss did not reach {describe(model, missed)} at the first step. Under this loss "
                    "they are not trained; they keep their values unless a later step reaches them."
                )
        else:
            self.never_reached &= missed

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.never_reached and model is not None:
            logger.warning(
                f"This stage did not train {describe(model, self.never_reached)}: the training loss never reached "
                "them, so they are saved as they were loaded."
            )


def describe(model, names: set[str], limit: int = 8) -> str:
    """'N trainable parameter tensors (V values) of ModelClass: a, b, c and K more'."""
    parameters = dict(model.named_parameters())
    names = [name for name in parameters if name in names]  # in the model's order
    count = sum(parameters[name].numel() for name in names)
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return f"{len(names)} trainable parameter tensors ({count:,} values) of {type(model).__name__}: {shown}"
