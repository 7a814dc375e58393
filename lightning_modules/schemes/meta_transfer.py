"""Meta-transfer learning of MZSR (Soh, Cho & Cho, CVPR 2020, Sec. 4.2): MAML over SR tasks, each a blur kernel,
so that a net pre-trained on bicubic pairs (stage 1, ``configs/mzsr_pretrain.yaml``) learns an initialisation from
which a few gradient steps on one image's own example adapt it to that image's kernel
(``lightning_modules.zero_shot.mzsr``).

Facts from the authors' code (github.com/JWSoh/MZSR ``train.py``, ``dataGenerator.py``, ``config.py``):

* a meta-batch holds ``tasks`` = 5 tasks; a task is one kernel (``gkernel.generate_kernel(k1=2.5·s, ksize=15)``:
  the recipe's ``ClassicalSR(kernel="mzsr")``, drawn once per ``images_per_kernel`` patches) and 2 × 8 HR
  patches 64×64, the first 8 the support set, the last 8 the query set, each LR = (HR ⊗ k)↓s directly, the net's
  input its bicubic upsampling. The support set is *not* the son of the query set, as the paper's Fig. 3 draws it:
  both are (LR, HR) pairs of the task's kernel, which at test time the image's (son, LR) pair stands for;
* ``inner_steps`` = 5 plain gradient steps at ``inner_lr`` = 1e-2 on the support L1 loss (``fast_weights =
  w - lr·grad``), the query L1 loss after each;
* the meta-objective: the query losses, averaged over the tasks, weighted per step (``get_loss_weights``: MAML++'s
  multi-step loss, every weight 1/N at first, the earlier ones falling by 1/N / (10000/3) per meta-step to
  0.03/N and the last rising to match) and averaged over the steps (``tf.reduce_mean``); Adam at ``meta_lr`` =
  1e-4 through second-order gradients from the first step (``SECOND_ORDER_GRAD_ITER = 0``); 100k meta-steps.
  The authors' ``global_step`` variable is never incremented (``apply_gradients`` is not given it), so their
  weights stay at 1/N unless a run is resumed with ``--step``; here they follow the meta-step as the formula
  intends (``anneal_loss_weights: false`` keeps them uniform as the code ran);
* the net starts from the pre-trained weights (``IS_TRANSFER``): ``init_from``.

Second-order gradients come from ``torch.func``: ``functional_call`` runs the net on the fast weights and
``torch.func.grad_and_value`` gives the inner gradients (and the support loss), which plain autograd then
differentiates again for the outer step (no meta-learning library: these two calls are all that MAML needs;
``first_order: true`` detaches the inner gradients, the authors' ``stop_grad``). The net must be free of batch statistics (ZSSR's/MZSR's net is).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value

from datamodules.errors import AnticipatedError
from lightning_modules.checkpoint_file import load_net_weights
from lightning_modules.schemes.base import RestorationScheme
from lightning_modules.restorer import NetRestorer
from lightning_modules.zero_shot.mzsr import DIRECT_RATES, TestTimeAdaptation, check_steps

LOSS_WEIGHT_DECAY_STEPS = 10000 / 3  # train.py get_loss_weights
MIN_LOSS_WEIGHT = 0.03


def query_loss_weights(step: int, n: int, anneal: bool = True) -> torch.Tensor:
    """The authors' per-step weights of the query losses at meta-step ``step`` (uniform 1/n when not annealed)."""
    weights = torch.full((n,), 1.0 / n, dtype=torch.float64)
    if not anneal or n == 1:
        return weights
    decay, floor = 1.0 / n / LOSS_WEIGHT_DECAY_STEPS, MIN_LOSS_WEIGHT / n
    weights[:-1] = torch.clamp(weights[:-1] - step * decay, min=floor)
    weights[-1] = min(1.0 / n + step * (n - 1) * decay, 1.0 - (n - 1) * floor)
    return weights


class MetaTransferScheme(RestorationScheme):
    def __init__(
        self,
        net: nn.Module,
        scale: int = 2,
        tasks: int = 5,
        task_batch_size: int = 8,
        inner_steps: int = 5,
        inner_lr: float = 1e-2,
        meta_lr: float = 1e-4,
        first_order: bool = False,
        anneal_loss_weights: bool = True,
        init_from: str | None = None,
        test_steps: int = 1,
        test_rates: list[float] = list(DIRECT_RATES),  # noqa: B006 (the CLI's default, never mutated)
        metric_space: Literal["y", "rgb"] = "y",
    ):
        """
        Args:
            tasks, task_batch_size: tasks per meta-batch and patches per support (and per query) set; the data's
                batch_size must be tasks × 2 × task_batch_size and its recipe's images_per_kernel 2 × task_batch_size.
            inner_steps, inner_lr: the plain gradient steps of each task's adaptation during meta-training.
            meta_lr: Adam's rate for the meta-update.
            first_order: drop the second-order terms (first-order MAML).
            anneal_loss_weights: MAML++'s annealing of the per-step query weights (module docstring).
            init_from: a checkpoint (``configs/mzsr_pretrain.yaml``'s) whose net starts the meta-training.
            test_steps, test_rates: the test-time adaptation ``restorelab benchmark``/``predict`` apply to this
                checkpoint when ``--steps`` is not given (the authors' ``--num`` default 1, the direct model's rates).
        """
        super().__init__(net, scale, metric_space)
        for option, value in (("tasks", tasks), ("task_batch_size", task_batch_size), ("inner_steps", inner_steps)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise AnticipatedError(f"model.init_args.{option}={value!r} must be an integer >= 1")
        for option, value in (("inner_lr", inner_lr), ("meta_lr", meta_lr)):
            if not isinstance(value, (int, float)) or value <= 0:
                raise AnticipatedError(f"model.init_args.{option}={value!r} must be a positive number")
        check_steps(test_steps, "model.init_args.test_steps")
        if any(m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
            raise AnticipatedError(f"model.init_args.net={type(net).__name__} has batch normalisation, whose "
                                   "statistics the per-task fast weights cannot carry")
        self.automatic_optimization = False

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        # a resumed run takes its weights from its own checkpoint, after this
        if stage == "fit" and self.hparams.init_from and not (self._trainer is not None and self.trainer.ckpt_path):
            load_net_weights(self.net, self.hparams.init_from, "model.init_args.init_from")

    def restore(self, batch: dict) -> torch.Tensor:
        """Validation and test measure what the checkpoint is for: the net after ``test_steps`` updates on each
        image's own example (``TestTimeAdaptation``, with the pair's kernel), not the initialisation itself."""
        if self.net.training or torch.is_grad_enabled() or not self.hparams.test_steps:
            return super().restore(batch)
        restorer = NetRestorer(self.net, "any", "", "sr", (self.scale,), device=self.device, budget=self.memory_budget)
        names = batch.get("name")
        what = ", ".join(map(str, names)) if isinstance(names, (list, tuple)) else ""
        return TestTimeAdaptation(restorer, self.hparams.test_steps, self.hparams.test_rates).run(batch, what)

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.meta_lr)

    # ------------------------------------------------------------------ MAML
    def split_tasks(self, batch: dict) -> tuple[torch.Tensor, ...]:
        """(support inputs, support targets, query inputs, query targets), each T×B×C×H×W, from a batch of
        T·2B patches; one line where the data does not match the task layout."""
        hp = self.hparams
        x, y = self.net_input(batch), batch["target"]
        per_task = 2 * hp.task_batch_size
        if len(x) != hp.tasks * per_task:
            raise AnticipatedError(f"data.init_args.batch_size={len(x)} must be model.init_args.tasks × 2 × "
                                   f"task_batch_size = {hp.tasks} × 2 × {hp.task_batch_size} = {hp.tasks * per_task}")
        kernels = batch.get("kernel")
        if kernels is not None:
            grouped = kernels.reshape(hp.tasks, per_task, -1)
            if not torch.equal(grouped, grouped[:, :1].expand_as(grouped)):
                raise AnticipatedError(f"data.init_args.recipe.init_args.images_per_kernel must be 2 × "
                                       f"model.init_args.task_batch_size = {per_task}: a task's patches share one kernel")
        x = x.reshape(hp.tasks, per_task, *x.shape[1:])
        y = y.reshape(hp.tasks, per_task, *y.shape[1:])
        b = hp.task_batch_size
        return x[:, :b], y[:, :b], x[:, b:], y[:, b:]

    def task_losses(self, params: dict, support_x, support_y, query_x, query_y) -> tuple[torch.Tensor, torch.Tensor]:
        """(the support loss before adaptation, the query loss after each inner step) of one task, differentiable
        in ``params`` to second order (first order with ``first_order``)."""
        hp = self.hparams

        def support_loss(weights: dict) -> torch.Tensor:
            return F.l1_loss(functional_call(self.net, weights, (support_x,)), support_y)

        fast, query, before = params, [], None
        for _ in range(hp.inner_steps):
            grads, value = grad_and_value(support_loss)(fast)
            before = value.detach() if before is None else before
            fast = {k: fast[k] - hp.inner_lr * (grads[k].detach() if hp.first_order else grads[k]) for k in fast}
            query.append(F.l1_loss(functional_call(self.net, fast, (query_x,)), query_y))
        return before, torch.stack(query)

    def meta_loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The authors' weighted meta-objective of one meta-batch and what is logged of it."""
        hp = self.hparams
        params = dict(self.net.named_parameters())
        before, query = zip(*(self.task_losses(params, *task) for task in zip(*self.split_tasks(batch))))
        query_per_step = torch.stack(query).mean(dim=0)  # over tasks: sum / META_BATCH_SIZE
        weights = query_loss_weights(step, hp.inner_steps, hp.anneal_loss_weights).to(query_per_step)
        loss = (weights * query_per_step).mean()
        return loss, {"train/support_loss": torch.stack(before).mean().detach(),
                      "train/query_loss": query_per_step[-1].detach()}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        loss, logged = self.meta_loss(batch, self.global_step)
        self.guard(loss, "meta loss")
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.log_training({"train/loss": loss.detach(), **logged}, batch_size=self.hparams.tasks)
        return loss.detach()
