"""The one contract every model family follows, and the Lightning system that trains any of them.

A family is a plain ``nn.Module`` built as ``Family(config, n_items, n_users)`` with

- ``loss(batch) -> scalar``: its training objective on a batch of user sequences;
- ``score(batch) -> (B, n_items)``: scores of every catalogue item, for full ranking.

A batch is a dict: ``users`` (B,) user indices (``n_users`` = unknown user) and ``seq``
(B, L) time-ordered item indices, left-padded with ``n_items`` (most recent last). Each
family uses what it needs: MF the user index, sequence families the history. Training,
evaluation, registration and recommendation only ever call ``loss`` and ``score``.
A family whose ``score`` adds a ranking-time adjustment that is not part of the fit (bert's
``popularity_adjust``) also defines ``fit_score(batch)``, the scores without it: early
stopping selects the epoch on those, so such a setting never changes what is trained.

A family that reads item text sets ``uses_text = True``; training then also passes
``item_text`` ((n_items, d) frozen text embeddings, components/text.py),
``item_strings`` (each item's text) and ``item_counts`` ((n_items,) training
interactions per item in the data it is trained on). What it learns from them must live in its
``state_dict`` (e.g. a buffer), so that a registered model is rebuilt from
``Family(config, n_items, n_users)`` plus its weights alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from components import metrics


def pad_left(seqs: list[np.ndarray], max_len: int, pad: int) -> torch.Tensor:
    """Right-align the last ``max_len`` items of each sequence; (B,) lists -> (B, L) long."""
    length = max(1, min(max_len, max((len(s) for s in seqs), default=1)))
    out = torch.full((len(seqs), length), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[i, length - len(s) :] = torch.tensor(s, dtype=torch.long)
    return out


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-2
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW); families may regularise inside their loss instead."""

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def fit_scores(model: nn.Module, batch: dict) -> torch.Tensor:
    """A family's scores before any ranking-time adjustment: ``fit_score`` where it has one."""
    return getattr(model, "fit_score", model.score)(batch)


class RecSystem(L.LightningModule):
    """Lightning system around any family: loss for training, full-ranking NDCG@10 for validation
    (of ``fit_score`` where the family has one: what early stopping reads)."""

    def __init__(self, model: nn.Module, optim: OptimConfig = OptimConfig()):
        super().__init__()
        self.model = model
        self.optim = optim
        self._val: list[torch.Tensor] = []

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model.score(batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.model.loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["users"]), sync_dist=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        scores = fit_scores(self.model, batch).float()
        metrics.exclude_seen(scores, batch["seen_rows"], batch["seen_cols"], batch["target"])
        self._val.append(metrics.target_ranks(scores, batch["target"]))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        ranks = torch.cat(self._val).double()
        self._val.clear()
        # Sums and counts, reduced over DDP ranks, give exact means over all users.
        hit = (ranks < 10).double()
        count = torch.tensor(float(len(ranks)), dtype=torch.float64, device=ranks.device)
        stats = torch.stack([(hit / torch.log2(ranks + 2)).sum(), hit.sum(), count])
        stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
        self.log("val_ndcg10", (stats[0] / stats[2]).item(), prog_bar=True)
        self.log("val_hr10", (stats[1] / stats[2]).item())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.optim.lr, weight_decay=self.optim.weight_decay)


# Rows of the (rows, n_items) logits handled at once by the fused cross-entropy: about 4M
# elements (16 MB) on CPU so each chunk stays in cache between its passes; larger on GPUs.
_CHUNK_ELEMS = {"cpu": 2**22}
_CHUNK_ELEMS_OTHER = 2**26


class LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``q @ table.T + bias`` against ``target``, fused and chunked.

    ``F.cross_entropy(q @ table.T + bias, target)`` makes autograd keep the whole (N, n_items)
    logits and walk them about ten times (bias add, log-softmax, its backward, a zero-filled
    gradient); on CPU that was 70–80% of an epoch of lstm and cnn (torch.profiler). Here each chunk of rows is
    scored, turned into softmax − one-hot and multiplied straight into the gradients of
    ``q``, ``table`` and ``bias`` in the forward pass (backward only scales them), so the
    logits live one chunk at a time. PyTorch has no fused op for this on CPU (Liger's and Apple's
    Cut Cross-Entropy are GPU kernels), hence the hand-written function.

    Matmuls run in ``compute_dtype`` (bf16 under bf16 autocast: 4-5× faster on CPUs with
    native bf16), the softmax and every accumulation in fp32.
    """

    @staticmethod
    def forward(ctx, q, table, bias, target, compute_dtype):
        n, n_items = len(q), len(table)
        wants = ctx.needs_input_grad[:3]
        with torch.autocast(q.device.type, enabled=False):
            q32, w32 = q.float(), table.float()
            ql, wl = q32.to(compute_dtype), w32.to(compute_dtype)
            gq = torch.empty_like(q32) if wants[0] else None
            gw = torch.zeros_like(w32) if wants[1] else None
            gb = torch.zeros(n_items, device=q.device) if bias is not None and wants[2] else None
            total = torch.zeros((), dtype=torch.float64, device=q.device)
            chunk = max(1, _CHUNK_ELEMS.get(q.device.type, _CHUNK_ELEMS_OTHER) // n_items)
            for s in range(0, n, chunk):
                qc, tc = ql[s : s + chunk], target[s : s + chunk]
                z = (qc @ wl.T).float()
                if bias is not None:
                    z += bias.float()
                z_target = z.gather(1, tc[:, None]).squeeze(1)
                top = z.amax(1)
                z.sub_(top[:, None]).exp_()  # unnormalised softmax
                norm = z.sum(1)
                total += (norm.log() + top - z_target).sum(dtype=torch.float64)
                if not any(wants):
                    continue
                r = 1.0 / (norm * n)  # d(mean loss)/d logits = (softmax - onehot) / n
                zl = z.to(compute_dtype)
                if gq is not None:
                    gq[s : s + chunk] = (zl @ wl).float().mul_(r[:, None]).sub_(w32[tc], alpha=1.0 / n)
                if gw is not None:
                    gw += (zl.T @ (q32[s : s + chunk] * r[:, None]).to(compute_dtype)).float()
                    gw.index_add_(0, tc, q32[s : s + chunk], alpha=-1.0 / n)
                if gb is not None:
                    gb.addmv_(z.T, r)
                    gb.index_add_(0, tc, torch.full_like(r, -1.0 / n))
        ctx.save_for_backward(gq, gw, gb)
        ctx.dtypes = (q.dtype, table.dtype, None if bias is None else bias.dtype)
        return (total / max(n, 1)).to(q.dtype if q.dtype.is_floating_point else torch.float32)

    @staticmethod
    def backward(ctx, grad):
        grads = [None if g is None else (g * grad).to(dt) for g, dt in zip(ctx.saved_tensors, ctx.dtypes, strict=True)]
        return *grads, None, None


def full_ce(q: torch.Tensor, target: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.cross_entropy(q @ table.T + bias, target)`` through :class:`LinearCrossEntropy`;
    matmuls in the autocast dtype when autocast is on (Lightning's ``bf16-mixed``)."""
    device = q.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
    return LinearCrossEntropy.apply(q, table, bias, target, dtype)


def sampled_or_full_ce(
    q: torch.Tensor, target: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None, sampled: int
) -> torch.Tensor:
    """Full cross-entropy over the catalogue, or a sampled softmax with shared uniform negatives.

    ``q`` (N, d) queries, ``table`` (n_items, d) output item vectors, ``bias`` (n_items,) or None.
    The sampled path scores the batch's targets plus ``sampled`` uniform negatives
    (in-batch softmax).
    """
    if not sampled:
        return full_ce(q, target, table, bias)
    neg = torch.randint(0, len(table), (sampled,), device=q.device)
    cand = torch.cat([target, neg])  # (N + S,) candidates; each row's positive sits on the diagonal
    logits = q @ table[cand].T  # (N, N + S)
    if bias is not None:
        logits = logits + bias[cand]
    return F.cross_entropy(logits, torch.arange(len(target), device=q.device))
