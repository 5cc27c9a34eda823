"""A text-aware transformer over item sequences, built from transformers' BertModel.

Sun et al., "BERT4Rec: Sequential Recommendation with Bidirectional Encoder
Representations from Transformer", CIKM 2019 (the ``masked`` objective: random items of
the sequence are replaced by a [MASK] token and predicted; at inference a [MASK] is
appended). Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018 (the
``causal`` objective: every position predicts the next item under a causal mask). Both
with the full cross-entropy over the catalogue (Klenitskiy & Vasilev, RecSys 2023).

Each item's vector fuses a learned id embedding with a projection of the item's frozen
MiniLM text embedding (Hou et al., "Towards Universal Sequence Representation Learning
for Recommender Systems" (UniSRec), KDD 2022, use text this way). The same fused vectors
are the input tokens and the output layer, so an item with text but few or no training
interactions still gets a meaningful score; ``fusion="text"`` drops ids altogether.

``finetune_layers = N > 0`` unfreezes the top N layers of the text encoder: the hidden
states below them are computed once (frozen), the top layers train with the recommender,
and the text vectors are re-pooled from them (meant for GPU deployments; off by default).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from components.models.contract import PAD_TYPE, Family, FamilyConfig, Search, SideInputs, rows_from_text
from components.models.loss import sampled_or_full_ce

_log = logging.getLogger(__name__)

FUSIONS = ("sum", "concat", "gate", "text", "id")
OBJECTIVES = ("causal", "masked")


@dataclass(frozen=True)
class BERTConfig(FamilyConfig):
    dim: int = 64
    """Hidden size of the transformer and of the fused item vectors."""
    layers: int = 2
    """Transformer blocks."""
    heads: int = 2
    """Attention heads."""
    dropout: float = 0.3
    """Dropout on hidden states and attention probabilities."""
    objective: str = "causal"
    """causal (next item at every position, SASRec-style) or masked (BERT4Rec cloze)."""
    mask_prob: float = 0.2
    """masked objective: share of items replaced by [MASK] in training."""
    fusion: str = "sum"
    """How an item's vector is made: sum (id + text projection), concat, gate, text (text
    only), id (no text)."""
    text_dim: int = 384
    """Size of the item text embeddings (MiniLM: 384)."""
    finetune_layers: int = 0
    """Top text-encoder layers trained with the recommender (0: text embeddings frozen)."""
    sampled: int = 0
    """0: full cross-entropy (a sampled softmax above ``sampled_above`` items); N > 0: a sampled softmax with N
    popularity-drawn negatives and logQ correction (components/models/loss.py: sampled_ce)."""
    id_dropout: float = 0.0
    """Training only: share of items whose id embedding is dropped at each step, so the
    text path learns to score an item alone (DropoutNet, Volkovs et al., NeurIPS 2017)."""
    item_bias: bool = True
    """A learned per-item score offset (it learns popularity, and so ranks rare items low)."""
    id_shrink: float = 0.0
    """k > 0: an item's id embedding and score offset count n / (n + k) for its n training
    interactions, so an item seen rarely is scored mostly by its text (needs a fusion of
    ids and text)."""
    popularity_adjust: float = 1.5
    """tau: ranking scores minus tau * log(1 + min(n, popularity_cap)) for an item's n
    training interactions (logit adjustment, Menon et al., ICLR 2021). The full
    cross-entropy learns the popularity prior; this takes part of it back, so that rarely
    bought items the history and their text point to can rank (cold start). Scoring only:
    training, early stopping included, reads the unadjusted scores (``fit_score``)."""
    popularity_cap: int = 10
    """c > 0: ``popularity_adjust`` counts at most c interactions per item. Items seen c
    times or more keep their order among themselves, as with tau = 0; rarer ones are lifted
    towards them. 0: no cap (the whole prior is flattened, the head's order included).

    tau 1.5 with cap 10 replaced tau 0.75 uncapped (2026-12-08), on full Beauty's validation
    targets, for two trained models (the defaults and dim 128; bench/popularity_adjust.py
    --caps, bench/RESULTS.md): the grid point with the highest cold-start NDCG@10 among
    those whose NDCG@10 stays within 3% of tau = 0 on both. Against tau 0.75 uncapped it
    raised NDCG@10 by 11% and cold-start NDCG@10 by 8-9% on both (issue 4's cold-start
    target came first: it is kept, the overall cost is given back)."""

    SAVED_BEFORE: ClassVar[dict] = {"popularity_cap": 0}
    RANKING_ONLY: ClassVar[tuple[str, ...]] = ("popularity_adjust", "popularity_cap")

    def __post_init__(self):
        super().__post_init__()
        if self.objective not in OBJECTIVES:
            raise ValueError(f"BERTConfig.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"BERTConfig.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if min(self.dim, self.layers, self.heads, self.text_dim) < 1 or self.dim % self.heads:
            raise ValueError("BERTConfig: dim, layers, heads, text_dim >= 1 and dim divisible by heads")
        if not (0 <= self.dropout < 1 and 0 < self.mask_prob < 1 and self.finetune_layers >= 0):
            raise ValueError("BERTConfig: 0 <= dropout < 1, 0 < mask_prob < 1, finetune_layers >= 0")
        if not 0 <= self.id_dropout < 1 or (self.id_dropout and self.fusion in ("text", "id")):
            raise ValueError("BERTConfig.id_dropout must be in [0, 1) and needs a fusion of ids and text")
        if self.id_shrink < 0 or (self.id_shrink and self.fusion in ("text", "id")):
            raise ValueError("BERTConfig.id_shrink must be >= 0 and needs a fusion of ids and text")
        if self.popularity_adjust < 0 or self.popularity_cap < 0:
            raise ValueError("BERTConfig.popularity_adjust and popularity_cap must be >= 0")
        if self.review_text and (self.finetune_layers or self.fusion == "id"):
            raise ValueError(
                "BERTConfig.review_text mixes review vectors into frozen item text: not with "
                "finetune_layers or fusion='id'"
            )


class BERT(Family):
    Config = BERTConfig
    uses_text = True  # training passes side.item_text (n_items, text_dim), item_strings, item_counts
    ITEM_ROWS = ("ids.weight", "bias", "text", "counts")
    search_space = {  # dim and heads as choices: every pair divides
        # Up to 256 wide and 0.7 dropout: on full Beauty a 128-wide model led the default
        # at 10 epochs but peaked at epoch 6 (bench/RESULTS.md, 2026-11-24), over-fitting
        # at dropout 0.3.
        "dim": Search(choices=(32, 64, 128, 256)),
        "layers": Search(1, 3),
        "heads": Search(choices=(1, 2, 4)),
        "dropout": Search(0.1, 0.7),
        "lr": Search(3e-4, 3e-3, log=True),
        "weight_decay": Search(1e-3, 0.5, log=True),
        "max_len": Search(choices=(50, 100, 200)),
        "id_dropout": Search(0.0, 0.3),
    }

    def __init__(self, config: BERTConfig, n_items: int, n_users: int, side: SideInputs | None = None):
        super().__init__(config, n_items, n_users, side)
        from transformers import BertConfig as HFBertConfig
        from transformers import BertModel

        c, side = config, side or SideInputs()  # no side inputs: loading a trained model
        self.pad, self.mask = n_items, n_items + 1
        # Frozen text vectors, saved with the weights so a registered model needs no encoder.
        text = torch.zeros(n_items, c.text_dim) if side.item_text is None else torch.as_tensor(side.item_text).float()
        if text.shape != (n_items, c.text_dim):
            raise ValueError(f"item_text must be ({n_items}, {c.text_dim}), got {tuple(text.shape)}")
        self.register_buffer("text", text)
        # Training interactions per item, saved with the weights (the served model ranks
        # as it was evaluated); only where a setting reads them.
        counts = None
        if c.id_shrink or c.popularity_adjust:
            counts = torch.zeros(n_items) if side.item_counts is None else torch.as_tensor(side.item_counts).float()
        self.register_buffer("counts", counts)  # None: not in the state dict
        self.ids = nn.Embedding(n_items, c.dim) if c.fusion != "text" else None
        self.proj = nn.Linear(c.text_dim, c.dim) if c.fusion != "id" else None
        self.fuse = nn.Linear(2 * c.dim, c.dim) if c.fusion in ("concat", "gate") else None
        # Padding is a constant zero vector; [MASK] is learned only where it is used (DDP
        # rejects parameters that get no gradient).
        self.register_buffer("pad_vector", torch.zeros(1, c.dim), persistent=False)
        self.mask_vector = nn.Parameter(torch.randn(1, c.dim) * 0.02) if c.objective == "masked" else None
        self.bias = nn.Parameter(torch.zeros(n_items)) if c.item_bias else None
        if self.ids is not None:
            nn.init.normal_(self.ids.weight, std=0.02)
        self.encoder = BertModel(
            HFBertConfig(
                vocab_size=1,  # items come in as inputs_embeds; the word table is unused
                hidden_size=c.dim,
                num_hidden_layers=c.layers,
                num_attention_heads=c.heads,
                intermediate_size=4 * c.dim,
                hidden_dropout_prob=c.dropout,
                attention_probs_dropout_prob=c.dropout,
                max_position_embeddings=c.max_len + 1,  # +1: the appended [MASK] of the masked objective
                type_vocab_size=1,
                is_decoder=c.objective == "causal",
            ),
            add_pooling_layer=False,
        )
        self.encoder.embeddings.word_embeddings.weight.requires_grad_(False)  # unused: inputs_embeds
        self.behaviour = self.behaviour_embedding(c.dim)
        self.repeat = (
            self.repeat_term(enabled=not self.negatives) if c.objective == "causal" else None
        )  # causal queries see their prefix
        self.intent = self.intent_embedding(c.dim)
        self.text_top = None
        if c.finetune_layers:
            self._init_finetuning(side.item_strings)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A model saved before item counts were kept (an earlier champion) ranks as it
        # did then: counts 0 make the adjustment and the id weighting no-ops.
        if self.counts is not None and prefix + "counts" not in state_dict:
            state_dict[prefix + "counts"] = torch.zeros_like(self.counts)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- item vectors ------------------------------------------------------------------
    def item_table(self) -> torch.Tensor:
        """(n_items, dim): each item's fused id/text vector (input tokens and output layer).

        Scoring without gradients (evaluation, serving) computes it once per state of the
        weights: the projection of every item's text is most of a served request's time."""
        if self.training or torch.is_grad_enabled():
            return self._item_table()
        # A tensor's _version counts its in-place changes (an optimiser step, load_state_dict).
        used = (self.ids, self.proj, self.fuse)
        tensors = [p for m in used if m is not None for p in m.parameters()] + [self.text, self.counts]
        key = tuple((id(t), t._version) for t in tensors if t is not None)
        if getattr(self, "_table_key", None) != key:
            self._table, self._table_key = self._item_table(), key
        return self._table

    def _item_table(self) -> torch.Tensor:
        c = self.config
        if c.fusion == "id":
            return self.ids.weight
        t = self.proj(self.text_vectors())
        if c.fusion == "text":
            return t
        i = self.ids.weight
        if c.id_shrink:
            i = i * self.id_weight()[:, None]
        if self.training and c.id_dropout:
            i = i * (torch.rand(len(i), 1, device=i.device) >= c.id_dropout).to(i.dtype)
        if c.fusion == "sum":
            return i + t
        if c.fusion == "concat":
            return self.fuse(torch.cat([i, t], dim=1))
        g = torch.sigmoid(self.fuse(torch.cat([i, t], dim=1)))  # gate
        return g * i + (1 - g) * t

    def item_vectors(self) -> torch.Tensor:
        return self.item_table()

    @torch.no_grad()
    def new_item_rows(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """A new item is its text: its id vector and score offset are borrowed
        (:func:`~components.models.contract.rows_from_text`), and it has no interactions."""
        if self.config.fusion == "id":
            raise NotImplementedError("BERT with fusion='id' scores items by their ids alone")
        if self.config.finetune_layers:  # its text vectors come from its own fine-tuned layers
            raise NotImplementedError("BERT with finetune_layers scores text through layers a new item never passed")
        text = torch.as_tensor(text, dtype=self.text.dtype)
        ids = {"ids.weight": self.ids.weight} if self.ids is not None else {}
        bias = {"bias": self.bias} if self.bias is not None else {}
        rows = {"text": text, **rows_from_text(text, self.text, ids, bias, self.counts)}
        if self.counts is not None:
            rows["counts"] = torch.zeros(len(text))
        return rows

    def id_weight(self) -> torch.Tensor:
        """(n_items,) n / (n + id_shrink): how much each item's id counts."""
        return self.counts / (self.counts + self.config.id_shrink)

    def offsets(self) -> torch.Tensor | None:
        """(n_items,) per-item score offsets (weighted like the ids), or None."""
        if self.bias is None or not self.config.id_shrink:
            return self.bias
        return self.bias * self.id_weight()

    def text_vectors(self) -> torch.Tensor:
        if self.text_top is None or self.hidden is None or not self.training:
            return self.text
        return self._pool_top_layers()

    # -- the transformer -----------------------------------------------------------------
    def forward(self, seq: torch.Tensor, table: torch.Tensor, types: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) left-padded item indices (``n_items`` = pad, ``n_items+1`` = [MASK]) and their
        event types (a [MASK] has type PAD_TYPE) -> (B, L, dim)."""
        special = torch.cat([self.pad_vector] + ([self.mask_vector] if self.mask_vector is not None else []))
        n = len(table)  # index n = padding, n + 1 = [MASK]
        # Gathered from the table and the special rows apart: concatenating them first copied
        # the whole (n_items, dim) table at every call (a served request's largest copy).
        item = (seq < n)[..., None]
        embeds = torch.where(item, table[seq.clamp(max=n - 1)], special[(seq - n).clamp(0, len(special) - 1)])
        L = seq.shape[1]
        # Positions count back from the most recent item, as if every batch were padded to
        # max_len: the newest item has the same position in training and at inference.
        positions = torch.arange(L, device=seq.device) + (self.config.max_len + 1 - L)
        if types is not None:
            embeds = embeds + self.behaviour(types)
        encoder = self.__dict__.get("_served_encoder")
        if encoder is None or self.training or torch.is_grad_enabled():
            encoder = self._encode
        return encoder(embeds, (seq != self.pad).long(), positions.expand_as(seq))

    def _encode(self, embeds: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return _Encoder.encode(self.encoder, embeds, attention_mask, positions)

    def for_serving(self) -> None:
        """Trace the encoder with TorchScript for requests. transformers' BertModel spends
        most of a request in Python (its mask builders, config lookups and decorators): 2.1
        ms for two layers of width 64 over a 12-event history against 0.47 ms traced, on one
        CPU thread. The trace runs on a left-padded example, so the graph keeps the padding
        mask (an unpadded example would trace a branch that drops it); it is checked
        against the eager encoder on other widths, batch sizes and paddings, and not used
        if any score differs. Kept out of the module tree: it is not a weight."""
        self.eval()
        c = self.config
        n = min(c.max_len, 4)

        def example(batch: int, width: int, padding: int):
            g = torch.Generator().manual_seed(width)
            embeds = torch.randn(batch, width, c.dim, generator=g)
            mask = torch.ones(batch, width, dtype=torch.long)
            mask[0, :padding] = 0
            positions = (torch.arange(width) + (c.max_len + 1 - width)).expand(batch, width)
            return embeds, mask, positions

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings: the branches checked below
            traced = torch.jit.freeze(torch.jit.trace(_Encoder(self).eval(), example(1, n, 1), check_trace=False))
            for shape in ((1, 1, 0), (2, c.max_len + 1, 3), (3, max(1, c.max_len // 2), 0)):
                inputs = example(*shape)
                if not torch.allclose(traced(*inputs), self._encode(*inputs), atol=1e-5):
                    _log.warning("bert: the traced encoder differs from the eager one at %s; serving eager", shape)
                    return
        self.__dict__["_served_encoder"] = traced

    def _with_mask_token(self, seq: torch.Tensor, token: int) -> torch.Tensor:
        tail = torch.full((len(seq), 1), token, dtype=seq.dtype, device=seq.device)
        return torch.cat([seq, tail], dim=1)[:, -self.config.max_len :]

    def score(self, batch: dict) -> torch.Tensor:
        scores = self.fit_score(batch)
        if self.config.popularity_adjust:
            scores = scores - popularity_penalty(self.counts, self.config.popularity_adjust, self.config.popularity_cap)
        return scores

    def fit_score(self, batch: dict) -> torch.Tensor:
        """The model's own scores, before ``popularity_adjust`` (early stopping reads these)."""
        seq, table, types = batch["seq"], self.item_table(), self.event_types(batch)
        if self.config.objective == "masked":
            seq = self._with_mask_token(seq, self.mask)
            types = None if types is None else self._with_mask_token(types, PAD_TYPE)
        h = self(seq, table, types)[:, -1]
        intent = self.ranking_intent(seq)
        if types is not None:
            h = h + self.intent(intent)
        scores = h @ table.T
        if (offsets := self.offsets()) is not None:
            scores = scores + offsets
        if types is not None and self.repeat is not None and self.repeat.active:
            scores = scores + self.repeat.dense(seq, types, intent, self.n_items)  # causal only: seq is the history
        return scores

    def loss(self, batch: dict) -> torch.Tensor:
        seq, table, types = batch["seq"], self.item_table(), self.event_types(batch)
        if self.config.objective == "causal":
            inputs, target = seq[:, :-1], seq[:, 1:]
            in_types = None if types is None else types[:, :-1]
            next_types = None if types is None else types[:, 1:]
            valid = (target != self.pad) & (inputs != self.pad)
        else:
            real = seq != self.pad
            picked = (torch.rand(seq.shape, device=seq.device) < self.config.mask_prob) & real
            # Always mask each sequence's newest item too: it is what inference asks for.
            picked[:, -1] |= real[:, -1]
            inputs, target = seq.masked_fill(picked, self.mask), seq
            in_types = None if types is None else types.masked_fill(picked, PAD_TYPE)
            next_types, valid = types, picked  # a [MASK] is asked for the masked event's behaviour
        h = self(inputs, table, in_types)
        extra = None
        if types is not None:
            valid &= self.predicted(next_types, target)
            intents = self.intents(next_types, target)
            h = h + self.intent(intents)
            if self.repeat is not None and self.repeat.active:
                extra = self.repeat.pairs(inputs, in_types, intents, valid, self.pad)
        return sampled_or_full_ce(h[valid], target[valid], table, self.offsets(), self.negatives, extra, self.log_q)

    # -- fine-tuning the text encoder's top layers ----------------------------------------
    def _init_finetuning(self, item_strings: list[str] | None) -> None:
        """Copy the encoder's top layers (trainable) and, given the items' texts, compute
        the frozen hidden states below them once (not saved: ``text`` is kept up to date)."""
        from components.text import MAX_LENGTH, load_pretrained

        tokenizer, encoder = load_pretrained()
        n, layers = self.config.finetune_layers, encoder.encoder.layer
        if n > len(layers):
            raise ValueError(f"finetune_layers={n} but the text encoder has {len(layers)} layers")
        self.text_top = nn.ModuleList(layers[-n:])
        self.register_buffer("hidden", None, persistent=False)
        self.register_buffer("hidden_mask", None, persistent=False)
        if item_strings is None:  # loading a trained model: its ``text`` buffer holds the result
            return
        tokens = tokenizer(item_strings, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        with torch.no_grad():
            h = _run_layers(layers[:-n], encoder.embeddings(input_ids=ids), mask)
        self.hidden, self.hidden_mask = h, mask

    def _pool_top_layers(self) -> torch.Tensor:
        from components.text import mean_pool

        return mean_pool(_run_layers(self.text_top, self.hidden, self.hidden_mask), self.hidden_mask)

    def train(self, mode: bool = True):
        super().train(mode)
        if not mode and self.text_top is not None and self.hidden is not None:
            with torch.no_grad():  # scoring uses the fine-tuned text vectors, computed once
                self.text.copy_(self._pool_top_layers())
        return self


def popularity_penalty(counts: torch.Tensor, tau: float, cap: int = 0) -> torch.Tensor:
    """(n_items,) tau * log(1 + n), n an item's training interactions, at most ``cap`` (0: no cap)."""
    return tau * torch.log1p(counts.clamp(max=cap) if cap else counts)


def _run_layers(layers, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BertLayers over (N, T, d) token states with an (N, T) padding mask (additive form)."""
    additive = (1.0 - mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
    for layer in layers:
        h = layer(h, attention_mask=additive)
    return h


class _Encoder(nn.Module):
    """BERT's encoder as a function of tensors alone (what torch.jit.trace takes)."""

    def __init__(self, model: BERT):
        super().__init__()
        self.encoder = model.encoder

    def forward(self, embeds: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.encode(self.encoder, embeds, attention_mask, positions)

    @staticmethod
    def encode(encoder, embeds: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = encoder(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=False,  # a causal BertModel (is_decoder) otherwise builds a key/value cache per call
        )
        return out.last_hidden_state
