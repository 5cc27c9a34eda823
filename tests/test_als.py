"""mf trained by alternating least squares (``solver="als"``, components/models/mf.py): each
solve against a dense closed-form solution, and a real Lightning fit that checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.batches import pad_left, pair_batches
from components.models.mf import MF, MFConfig

N_ITEMS, N_USERS, D, ALPHA, REG = 30, 12, 4, 5.0, 0.1


def tiny(cg_steps: int) -> tuple[MF, list[np.ndarray], dict]:
    torch.manual_seed(0)
    m = MF(MFConfig(dim=D, solver="als", alpha=ALPHA, reg=REG, cg_steps=cg_steps), N_ITEMS, N_USERS)
    rng = np.random.default_rng(0)
    seqs = [rng.choice(N_ITEMS, size=int(rng.integers(1, 6)), replace=False) for _ in range(N_USERS)]
    return m, seqs, pair_batches(seqs, [np.zeros(len(s), dtype=np.int64) for s in seqs], 16, N_USERS)[0]


def padded(seqs: list[np.ndarray]) -> dict:
    """The same users as the gradient solver's padded batch."""
    return {"users": torch.arange(N_USERS), "seq": pad_left(seqs, 16, N_ITEMS)}


def closed_form(other: torch.Tensor, observed: list[int]) -> torch.Tensor:
    """Hu et al.'s normal equations, dense: (Oᵀ C O + reg I) x = Oᵀ C p."""
    o = other.double()
    c, p = torch.ones(len(o), dtype=torch.float64), torch.zeros(len(o), dtype=torch.float64)
    c[observed], p[observed] = 1 + ALPHA, 1.0
    return torch.linalg.solve(o.T @ torch.diag(c) @ o + REG * torch.eye(D, dtype=torch.float64), o.T @ (c * p))


@pytest.mark.parametrize("cg_steps", [0, D])  # exact Cholesky; conjugate gradient, exact in d steps
def test_each_sweep_solves_users_then_items_in_closed_form(cg_steps):
    m, seqs, batch = tiny(cg_steps)
    items_before = m.items.weight.detach().clone()
    loss = m.solve_step(batch)
    for u in (0, 5):
        torch.testing.assert_close(
            m.users.weight[u].double(), closed_form(items_before, list(seqs[u])), atol=1e-5, rtol=0
        )
    torch.testing.assert_close(m.items.weight, items_before)  # items wait for the epoch's end
    assert loss.item() == pytest.approx(m.loss(padded(seqs)).item(), rel=1e-5)  # the logged loss is the objective
    m.solve_epoch_end()
    users = m.users.weight.detach()[:N_USERS]
    for item in (int(seqs[0][0]), int(seqs[3][-1])):
        holders = [u for u, s in enumerate(seqs) if item in s]
        torch.testing.assert_close(m.items.weight[item].double(), closed_form(users, holders), atol=1e-5, rtol=0)


def test_a_sweep_under_bf16_autocast_solves_in_fp32():
    """Lightning's bf16-mixed wraps the step in autocast: the solves ignore it."""
    m, seqs, batch = tiny(D)
    ref, _, _ = tiny(D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m.solve_step(batch)
        m.solve_epoch_end()
    ref.solve_step(batch)
    ref.solve_epoch_end()
    torch.testing.assert_close(m.items.weight, ref.items.weight)


def test_three_cg_steps_lower_the_loss_every_sweep():
    m, _, batch = tiny(3)
    losses = []
    for _ in range(4):
        losses.append(m.solve_step(batch).item())
        m.solve_epoch_end()
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False))


def test_a_sweep_does_not_depend_on_the_users_per_batch():
    """Batches of 5 users or one of all: the same vectors after a sweep (each user's solve is
    its own; the item step reads every batch's pairs)."""
    _, seqs, _ = tiny(3)
    types = [np.arange(len(s)) % 2 for s in seqs]  # two kinds of event, weights 1 and 3
    weights = np.array([1.0, 3.0])
    out = []
    for per_batch in (5, N_USERS):
        torch.manual_seed(0)
        m = MF(MFConfig(dim=D, solver="als", alpha=ALPHA, reg=REG), N_ITEMS, N_USERS)
        m.type_weights = torch.tensor(weights)
        batches = pair_batches(seqs, types, 16, per_batch, weights)
        assert [b["epoch_end"] for b in batches] == [False, False, True][-len(batches) :]
        for b in batches:
            m.solve_step(b)
        m.solve_epoch_end()
        out.append((m.users.weight.detach().clone(), m.items.weight.detach().clone()))
    torch.testing.assert_close(out[0], out[1], atol=1e-6, rtol=1e-5)


def test_a_repeated_item_counts_once_at_its_strongest_behaviour():
    m, _, _ = tiny(3)
    weights = np.array([1.0, 3.0, 2.0])
    m.type_weights = torch.tensor(weights)
    seqs, types = [np.array([9, 4, 7, 4, 4]), np.array([5])], [np.array([0, 0, 0, 1, 2]), np.array([2])]
    batch = pair_batches(seqs, types, 16, 2, weights)[0]
    rows, items, conf = m.observed(batch)
    assert rows.tolist() == [0, 0, 0, 1] and items.tolist() == [4, 7, 9, 5]
    assert conf.tolist() == [1 + ALPHA * 3.0, 1 + ALPHA, 1 + ALPHA, 1 + ALPHA * 2.0]
    assert pair_batches(seqs, types, 2, 1, weights)[0]["items"].tolist() == [4]  # the last max_len events only


def test_als_is_for_the_ials_loss_only():
    with pytest.raises(ValueError, match="solver"):
        MFConfig(solver="als", loss="softmax")
    with pytest.raises(ValueError, match="cg_steps"):
        MFConfig(solver="als", cg_steps=-1)


def test_a_lightning_fit_solves_validates_and_checkpoints(tmp_path):
    """The family inside RecSystem: manual optimisation, no gradients, a best checkpoint
    (Lightning counts the steps) and a validation NDCG@10 that rises from the first sweep."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from components import training
    from components.datasets import View
    from components.models.system import RecSystem

    rng = np.random.default_rng(1)
    groups = np.arange(300) % 10  # ten tastes: a user's items come from one tenth of the catalogue
    seqs = [rng.choice(np.arange(g * 20, g * 20 + 20), size=8, replace=False) for g in groups]
    view = View(
        train_seqs=[s[:-1] for s in seqs],
        eval_users=np.arange(300),
        eval_hist=[s[:-1] for s in seqs],
        eval_targets=np.array([s[-1] for s in seqs]),
    )
    torch.manual_seed(0)
    system = RecSystem(MF(MFConfig(dim=8, solver="als", alpha=10.0, reg=0.1), 200, 300))
    best = ModelCheckpoint(dirpath=tmp_path, monitor="val_ndcg10", mode="max")
    curve = []

    class Curve(L.Callback):
        def on_validation_end(self, trainer, module):
            curve.append(float(trainer.callback_metrics["val_ndcg10"]))

    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        callbacks=[best, Curve()],
        num_sanity_val_steps=0,
    )
    trainer.fit(system, training.pair_loader(view, 16, 64), training.val_loader(view, 200, 16))
    assert best.best_model_path and trainer.global_step == 3 * 5  # 300 users in batches of 64
    assert curve[-1] > curve[0] and curve[-1] > 0.2
