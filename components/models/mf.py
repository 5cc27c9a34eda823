"""Matrix factorisation: a user vector and an item vector per id, score = their dot product.

Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009
(the MF model); objective ``ials``: Hu, Koren & Volinsky, "Collaborative Filtering for
Implicit Feedback Datasets", ICDM 2008, as revisited by Rendle et al., "Revisiting the
Performance of iALS on Item Recommendation Benchmarks", RecSys 2022.

``ials`` (default) is the weighted squared loss over *all* items, computed with the
Gramian trick so that a batch costs O(B·d² + n·d²) instead of O(B·n·d):

    L = Σ_(u,i) observed (1+α)(1 - s_ui)² + Σ_(u,i) unobserved s_ui² + λ(|U|² + |V|²)
    Σ_i s_ui² = u (VᵀV) uᵀ

Behaviour: an item's confidence is ``1 + alpha * w`` for the largest behaviour weight ``w``
among the user's events with it (the spec's ``behaviour.weights``; 1 for a one-type log,
which is the formula above): a purchase says more than a view.

``softmax`` is the full-catalogue multinomial likelihood (Mult-VAE style) with an item
bias; on Beauty it reached NDCG@10 0.019 against 0.029+ for ``ials`` (bench/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from components.models.contract import Family, FamilyConfig, Search, SideInputs


@dataclass(frozen=True)
class MFConfig(FamilyConfig):
    dim: int = 128
    """Embedding size of users and items."""
    loss: str = "ials"
    """``ials`` (weighted squared loss over all items) or ``softmax`` (full cross-entropy)."""
    alpha: float = 20.0
    """iALS: extra weight of observed pairs (weight 1 + alpha)."""
    reg: float = 0.2
    """L2 on the batch's user vectors and (scaled to the batch's share of users) on item vectors."""
    init_std: float = 0.01
    """Std of the normal initialisation of the embeddings."""
    max_len: int = 512
    """How many of the user's most recent items the training batch carries."""
    lr: float = 1e-2
    """Default learning rate for this family (the flow's ``lr`` overrides it)."""

    def __post_init__(self):
        super().__post_init__()
        if self.loss not in ("ials", "softmax"):
            raise ValueError(f"MFConfig.loss must be 'ials' or 'softmax', got {self.loss!r}")
        if self.dim <= 0 or self.alpha < 0 or self.reg < 0:
            raise ValueError("MFConfig: dim must be > 0, alpha and reg >= 0")


class MF(Family):
    Config = MFConfig
    ITEM_ROWS = ("items.weight", "bias")
    search_space = {  # around the defaults, as wide as implicit's and iALS papers' grids
        "dim": Search(32, 256, log=True),
        "lr": Search(1e-3, 5e-2, log=True),
        "alpha": Search(1.0, 60.0, log=True),
        "reg": Search(0.01, 2.0, log=True),
    }
    USER_ROWS = ("users.weight",)

    def __init__(self, config: MFConfig, n_items: int, n_users: int, side: SideInputs | None = None):
        super().__init__(config, n_items, n_users, side)
        # Row n_users is the unknown user: zeros, never trained, so it scores by the item bias.
        self.users = nn.Embedding(n_users + 1, config.dim, padding_idx=n_users)
        self.items = nn.Embedding(n_items, config.dim)
        # Item bias: softmax only (frozen otherwise, so DDP finds no unused trainable parameter).
        self.bias = nn.Parameter(torch.zeros(n_items), requires_grad=config.loss == "softmax")
        nn.init.normal_(self.users.weight, std=config.init_std)
        nn.init.normal_(self.items.weight, std=config.init_std)
        with torch.no_grad():
            self.users.weight[n_users].zero_()

    def item_vectors(self) -> torch.Tensor:
        return self.items.weight

    def query_vectors(self, batch: dict) -> torch.Tensor | None:
        # softmax adds an item bias: not a dot product with the item vectors alone
        return self.users(batch["users"]) if self.config.loss == "ials" else None

    def score(self, batch: dict) -> torch.Tensor:
        u = self.users(batch["users"])  # (B, d)
        s = u @ self.items.weight.T  # (B, N)
        return s + self.bias if self.config.loss == "softmax" else s

    def loss(self, batch: dict) -> torch.Tensor:
        seq = batch["seq"]  # (B, L), padded with n_items
        y = torch.zeros(len(seq), self.n_items + 1, device=seq.device)
        y.scatter_reduce_(1, seq, self.event_weights(batch), reduce="amax")
        y = y[:, : self.n_items]  # (B, N) each training item's largest behaviour weight (0: not observed)
        u = self.users(batch["users"])  # (B, d)
        s = self.score(batch)  # (B, N)
        cfg, batch_share = self.config, len(seq) / self.n_users
        if cfg.loss == "softmax":
            nll = -(torch.log_softmax(s, dim=1) * y).sum(1) / y.sum(1).clamp(min=1)
            return nll.mean() + cfg.reg * (u.pow(2).sum(1).mean())
        gram = self.items.weight.T @ self.items.weight  # (d, d)
        all_sq = ((u @ gram) * u).sum()  # Σ_u Σ_i s_ui²
        seen = (y > 0).to(s.dtype)
        observed = ((1 + cfg.alpha * y) * (1 - s).pow(2) - s.pow(2)) * seen  # replace s² by (1+αw)(1-s)² there
        l2 = u.pow(2).sum() + batch_share * self.items.weight.pow(2).sum()
        return (all_sq + observed.sum() + cfg.reg * l2) / len(seq)
