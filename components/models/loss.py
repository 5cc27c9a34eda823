"""Full-catalogue cross-entropy, fused and chunked, and its sampled-softmax option (lstm, cnn, bert)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

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

    ``extra`` = (rows, cols, values): sparse additions to the logits (the repeat term,
    components/models/contract.py), rows sorted; ``values`` gets its gradient too.
    """

    @staticmethod
    def forward(ctx, q, table, bias, target, compute_dtype, rows=None, cols=None, values=None):
        n, n_items = len(q), len(table)
        wants = ctx.needs_input_grad[:3]
        gv = torch.zeros_like(values, dtype=torch.float32) if values is not None else None
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
                if values is not None:
                    lo, hi = torch.searchsorted(rows, torch.tensor([s, s + chunk], device=rows.device)).tolist()
                    er, ec = rows[lo:hi] - s, cols[lo:hi]
                    z.index_put_((er, ec), values[lo:hi].float(), accumulate=True)
                z_target = z.gather(1, tc[:, None]).squeeze(1)
                top = z.amax(1)
                z.sub_(top[:, None]).exp_()  # unnormalised softmax
                norm = z.sum(1)
                total += (norm.log() + top - z_target).sum(dtype=torch.float64)
                if not any(wants) and gv is None:
                    continue
                r = 1.0 / (norm * n)  # d(mean loss)/d logits = (softmax - onehot) / n
                if gv is not None:
                    gv[lo:hi] = z[er, ec] * r[er] - (ec == tc[er]).float() / n
                zl = z.to(compute_dtype)
                if gq is not None:
                    gq[s : s + chunk] = (zl @ wl).float().mul_(r[:, None]).sub_(w32[tc], alpha=1.0 / n)
                if gw is not None:
                    gw += (zl.T @ (q32[s : s + chunk] * r[:, None]).to(compute_dtype)).float()
                    gw.index_add_(0, tc, q32[s : s + chunk], alpha=-1.0 / n)
                if gb is not None:
                    gb.addmv_(z.T, r)
                    gb.index_add_(0, tc, torch.full_like(r, -1.0 / n))
        ctx.save_for_backward(gq, gw, gb, gv)
        ctx.dtypes = tuple(None if x is None else x.dtype for x in (q, table, bias, values))
        return (total / max(n, 1)).to(q.dtype if q.dtype.is_floating_point else torch.float32)

    @staticmethod
    def backward(ctx, grad):
        grads = [None if g is None else (g * grad).to(dt) for g, dt in zip(ctx.saved_tensors, ctx.dtypes, strict=True)]
        return *grads[:3], None, None, None, None, grads[3]


def full_ce(
    q: torch.Tensor, target: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None, extra=None
) -> torch.Tensor:
    """``F.cross_entropy(q @ table.T + bias (+ extra), target)`` through :class:`LinearCrossEntropy`;
    matmuls in the autocast dtype when autocast is on (Lightning's ``bf16-mixed``)."""
    device = q.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
    return LinearCrossEntropy.apply(q, table, bias, target, dtype, *(extra or (None, None, None)))


def sampled_or_full_ce(
    q: torch.Tensor,
    target: torch.Tensor,
    table: torch.Tensor,
    bias: torch.Tensor | None,
    sampled: int,
    extra: tuple | None = None,
    log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Full cross-entropy over the catalogue, or (``sampled`` > 0) :func:`sampled_ce`.

    ``q`` (N, d) queries, ``table`` (n_items, d) output item vectors, ``bias`` (n_items,) or None,
    ``extra`` (rows, cols, values) sparse logit additions (full cross-entropy only), ``log_q``
    (n_items,) the negatives' proposal as log-probabilities (None: uniform).
    """
    if not sampled:
        return full_ce(q, target, table, bias, extra)
    if extra is not None:
        raise ValueError("the repeat term needs the full cross-entropy (sampled = 0)")
    return sampled_ce(q, target, table, bias, sampled, log_q)


def sampled_ce(
    q: torch.Tensor,
    target: torch.Tensor,
    table: torch.Tensor,
    bias: torch.Tensor | None,
    negatives: int,
    log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax with logQ correction (Bengio & Senécal 2008; Jean et al. 2015; Yi et
    al., RecSys 2019): each row's target against ``negatives`` items shared by the batch,
    drawn from the proposal ``log_q`` (training popularity; None: uniform); every logit,
    the target's too, minus the log of its probability under the proposal, so the sampled
    loss estimates the full softmax's rather than one biased against popular items; a
    negative that is the row's own target is left out. Memory: rows × negatives, never rows
    × catalogue."""
    if log_q is None:
        neg = torch.randint(0, len(table), (negatives,), device=q.device)
    else:
        neg = torch.multinomial(log_q.exp(), negatives, replacement=True)
    pos = (q * table[target]).sum(1)
    scores = q @ table[neg].T  # (N, negatives)
    if bias is not None:
        pos, scores = pos + bias[target], scores + bias[neg]
    if log_q is not None:
        pos, scores = pos - log_q[target], scores - log_q[neg]
    scores = scores.masked_fill(neg[None, :] == target[:, None], float("-inf"))
    logits = torch.cat([pos[:, None], scores], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
