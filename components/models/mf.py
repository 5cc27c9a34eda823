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

``solver = "als"`` minimises the same ``ials`` loss by alternating least squares instead of
gradient steps (Hu et al. 2008; ``implicit``'s ALS): each training batch solves its users'
vectors exactly given the item vectors, and each epoch ends by solving every item's vector
given the users' (``cg_steps`` conjugate-gradient steps from the current vectors, as
implicit does; 0: exact Cholesky solves), Gramian trick as above. One epoch is one sweep;
``lr`` is not used.

``softmax`` is the full-catalogue multinomial likelihood (Mult-VAE style) with an item
bias; on Beauty it reached NDCG@10 0.019 against 0.029+ for ``ials`` (bench/RESULTS.md).
"""

from __future__ import annotations

import warnings
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
    solver: str = "gradient"
    """``gradient`` (Adam on the loss) or ``als`` (closed-form alternating least squares; ``ials`` only)."""
    cg_steps: int = 3
    """ALS: conjugate-gradient steps per solve, from the current vector (implicit's default);
    0: exact Cholesky solves."""

    def __post_init__(self):
        super().__post_init__()
        if self.loss not in ("ials", "softmax"):
            raise ValueError(f"MFConfig.loss must be 'ials' or 'softmax', got {self.loss!r}")
        if self.cg_steps < 0:
            raise ValueError(f"MFConfig.cg_steps must be >= 0, got {self.cg_steps}")
        if self.solver not in ("gradient", "als") or (self.solver == "als" and self.loss != "ials"):
            raise ValueError(f"MFConfig.solver must be 'gradient', or 'als' with loss 'ials'; got {self.solver!r}")
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
        self._pairs: list[torch.Tensor] = []  # solver="als": this epoch's (user, item) pairs and confidences

    def item_vectors(self) -> torch.Tensor:
        return self.items.weight

    # -- alternating least squares (solver="als") ---------------------------------------------
    @property
    def closed_form(self) -> bool:
        return self.config.solver == "als"

    def observed(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A pair batch's (row, item) pairs (distinct, sorted: components/batches.py:
        pair_batches) and their confidence 1 + alpha * w, w the weight of the pair's strongest
        behaviour (as in :meth:`loss`)."""
        rows, items, types = batch["rows"], batch["items"], batch.get("types")
        w = self.type_weights[types].float() if types is not None else torch.ones(len(items), device=items.device)
        return rows, items, 1 + self.config.alpha * w

    @torch.no_grad()
    @torch.autocast("cuda", enabled=False)  # solves in fp32 under bf16-mixed too (and torch's
    @torch.autocast("cpu", enabled=False)  # sparse products have no bf16 kernels on CPU)
    def solve_step(self, batch: dict) -> torch.Tensor:
        """Solve the batch's users given the item vectors; keep the pairs for the item step.
        Returns the batch's loss after the step (as :meth:`loss` computes it, without
        scoring every item)."""
        rows, items, conf = self.observed(batch)
        users, v, cfg = batch["users"], self.items.weight.float(), self.config
        pattern = _pattern(rows, items, len(users), v)
        x = _least_squares(v, pattern, conf, self.users.weight[users].float(), cfg.reg, cfg.cg_steps)
        self.users.weight[users] = x
        self._pairs += [torch.stack([users[rows], items]), conf]
        s = _pair_dots(pattern, x, v)
        all_sq = ((x @ (v.T @ v)) * x).sum()
        l2 = x.pow(2).sum() + len(users) / self.n_users * v.pow(2).sum()
        return (all_sq + (conf * (1 - s).pow(2) - s.pow(2)).sum() + cfg.reg * l2) / len(users)

    @torch.no_grad()
    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def solve_epoch_end(self) -> None:
        """Solve every item given the users' vectors (over the pairs this epoch's batches held)."""
        if not self._pairs:
            return
        pairs, conf = torch.cat(self._pairs[0::2], dim=1), torch.cat(self._pairs[1::2])
        self._pairs = []
        order = torch.argsort(pairs[1] * (self.n_users + 1) + pairs[0])  # by item, then user
        u = self.users.weight.float().clone()
        u[self.n_users] = 0  # the unknown user takes no part
        cfg = self.config
        pattern = _pattern(pairs[1][order], pairs[0][order], self.n_items, u)
        x = _least_squares(u, pattern, conf[order], self.items.weight.float(), cfg.reg, cfg.cg_steps)
        self.items.weight.copy_(x)

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


def _crow(owners: torch.Tensor, n: int) -> torch.Tensor:
    """Compressed row offsets of sorted ``owners`` in 0..n-1."""
    crow = torch.zeros(n + 1, dtype=torch.long, device=owners.device)
    crow[1:] = torch.cumsum(torch.bincount(owners, minlength=n), 0)
    return crow


def _csr(crow: torch.Tensor, partners: torch.Tensor, values: torch.Tensor, n_partners: int) -> torch.Tensor:
    """The sparse (owners x partners) matrix of the observed pairs (``partners`` sorted
    within an owner)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta": it is what torch has
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, partners, values, size=(len(crow) - 1, n_partners), check_invariants=False)


def _pair_dots(pattern: torch.Tensor, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """x[owner] · other[partner] for every observed pair of the CSR ``pattern`` (a sampled
    dense-dense product: no (pairs, d) copy of either side)."""
    return torch.sparse.sampled_addmm(pattern, x, other.T, beta=0.0).values()


def _pattern(owners: torch.Tensor, partners: torch.Tensor, n: int, other: torch.Tensor) -> torch.Tensor:
    """The CSR pattern of the pairs (``owners`` sorted, in 0..n-1), values unused."""
    return _csr(
        _crow(owners, n), partners, torch.zeros(len(partners), dtype=other.dtype, device=other.device), len(other)
    )


def _least_squares(
    other: torch.Tensor,
    pattern: torch.Tensor,
    conf: torch.Tensor,
    x0: torch.Tensor,
    reg: float,
    cg_steps: int,
) -> torch.Tensor:
    """Each owner's vector x minimising Σ_j s_j² + Σ_observed [c (1 - s)² - s²] + reg |x|²,
    s = other @ x (the iALS loss of one user given the item vectors, or of one item given
    the user vectors), i.e. the solution of

        (Oᵀ O + reg I) x + Σ_observed (c - 1) (o · x) o = Σ_observed c o.

    ``pattern`` (:func:`_pattern`: owners 0..len(x0)-1 by partners, the rows of ``other``)
    holds the observed pairs, ``conf`` their confidences in its order.
    ``cg_steps`` > 0: that many conjugate-gradient steps from ``x0`` (Hu et al. 2008's system,
    solved as implicit does; each step costs pairs x d, no d x d matrix per owner); 0: exact,
    a batched Cholesky solve of one (d, d) system per owner. Written here because torch has
    neither solver for a batch of these sparse normal equations; the products are torch's
    sparse ones (sampled dense-dense, then sparse-dense: 15-20x faster on CPU than gathering
    a (pairs, d) copy of the partners' vectors, bench/RESULTS.md)."""
    n, d = x0.shape
    gram = other.T @ other + reg * torch.eye(d, dtype=other.dtype, device=other.device)
    crow, partners, extra = pattern.crow_indices(), pattern.col_indices(), conf - 1
    b = _csr(crow, partners, conf, len(other)) @ other

    def times_a(p: torch.Tensor) -> torch.Tensor:  # A p for every owner at once
        dots = _pair_dots(pattern, p, other).mul_(extra)
        return torch.addmm(_csr(crow, partners, dots, len(other)) @ other, p, gram)

    if not cg_steps:
        owners = torch.repeat_interleave(torch.arange(n, device=crow.device), crow.diff())
        vecs = other[partners]  # (pairs, d)
        a = gram.expand(n, d, d).clone()
        a.index_put_((owners,), (conf - 1)[:, None, None] * vecs[:, :, None] * vecs[:, None, :], accumulate=True)
        return torch.cholesky_solve(b[:, :, None], torch.linalg.cholesky(a))[:, :, 0]
    x = x0.clone()
    r = b - times_a(x)
    p, rs = r.clone(), (r * r).sum(1)
    for _ in range(cg_steps):
        ap = times_a(p)
        alpha = rs / (p * ap).sum(1).clamp(min=1e-20)
        x += alpha[:, None] * p
        r -= alpha[:, None] * ap
        rs_new = (r * r).sum(1)
        p = r + (rs_new / rs.clamp(min=1e-20))[:, None] * p
        rs = rs_new
    return x
