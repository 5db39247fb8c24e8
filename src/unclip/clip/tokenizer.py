"""A word-level caption tokenizer, trained on the captions it will see.

Our captions come from small vocabularies (the ``shapes`` templates use a few dozen
words), so a word-level vocabulary is exact, tiny and readable, where a 49k-token BPE
(CLIP, Radford et al. 2021, section 2.4) would be almost all unused rows. Text is lower-cased
and split into runs of letters and digits; punctuation is dropped. A word never seen in
training maps to ``unk`` rather than raising, so any prompt can be encoded.

Token layout of one caption: ``[bos, w_1, ..., w_n, eos, pad, pad, ...]`` with ``pad = 0``.
Captions too long for the context keep their first words and always end in ``eos``, so
the text encoder can pool at the last real token.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..errors import ConfigError, InputError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
FORMAT = "unclip-word-tokenizer"
VERSION = 1

# Runs of unicode letters/digits ("left", "of", "2"); underscores and punctuation split.
_WORD = re.compile(r"[^\W_]+")


def split_words(text: str) -> list[str]:
    """Lower-case ``text`` and return its words (runs of letters and digits)."""
    return _WORD.findall(text.lower())


class Tokenizer:
    """Word-level tokenizer with ``pad=0, bos=1, eos=2, unk=3`` and a learned word list.

    Build one with :meth:`train` (from captions) or :meth:`from_dict` (from a saved
    checkpoint's ``extra``); encode with :meth:`encode`.
    """

    pad_id = 0
    bos_id = 1
    eos_id = 2
    unk_id = 3

    def __init__(self, words: Sequence[str]) -> None:
        words = list(words)
        bad = [w for w in words if not isinstance(w, str) or split_words(w) != [w]]
        if bad:
            raise ConfigError(f"tokenizer vocabulary holds entries that are not single lower-case words: {bad[:5]}")
        if len(set(words)) != len(words):
            dupes = sorted(w for w, c in Counter(words).items() if c > 1)
            raise ConfigError(f"tokenizer vocabulary has duplicate words: {dupes[:5]}")
        self.words: list[str] = words
        self.itos: list[str] = list(SPECIALS) + words
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        # Captions repeat a lot (templated datasets), so remember each text's ids.
        self._cache: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ building
    @classmethod
    def train(cls, captions: Iterable[str], min_count: int = 1, max_vocab: int | None = None) -> "Tokenizer":
        """Learn a vocabulary from ``captions``.

        Words are ordered by frequency (ties alphabetically), so the result depends only
        on the multiset of captions.

        Args:
            captions: any iterable of strings.
            min_count: drop words seen fewer times than this.
            max_vocab: cap on the total vocabulary size, the 4 special tokens included.
        """
        if min_count < 1:
            raise ConfigError(f"min_count must be >= 1, got {min_count}")
        if max_vocab is not None and max_vocab <= len(SPECIALS):
            raise ConfigError(f"max_vocab must exceed the {len(SPECIALS)} special tokens, got {max_vocab}")
        counts: Counter[str] = Counter()
        n = 0
        for caption in captions:
            if not isinstance(caption, str):
                raise InputError(f"captions must be strings, got {type(caption).__name__}: {caption!r}")
            counts.update(split_words(caption))
            n += 1
        if n == 0:
            raise InputError("cannot train a tokenizer on no captions; pass at least one caption")
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_vocab is not None:
            ranked = ranked[: max_vocab - len(SPECIALS)]
        return cls(ranked)

    # ------------------------------------------------------------------ encoding
    @property
    def vocab_size(self) -> int:
        """Number of token ids (special tokens included); the text embedding's row count."""
        return len(self.itos)

    def __len__(self) -> int:
        return self.vocab_size

    def word_ids(self, text: str) -> list[int]:
        """Ids of the words of ``text``, without bos/eos; unknown words give ``unk``."""
        if not isinstance(text, str):
            raise InputError(f"text to tokenize must be a string, got {type(text).__name__}: {text!r}")
        ids = self._cache.get(text)
        if ids is None:
            ids = [self.stoi.get(w, self.unk_id) for w in split_words(text)]
            if len(self._cache) < 100_000:
                self._cache[text] = ids
        return ids

    def encode(self, texts: str | Sequence[str], context_length: int) -> torch.Tensor:
        """Encode texts as a padded (B, L) int64 tensor, ``L = context_length``.

        Each row is ``[bos, words..., eos, 0, ...]``; a caption with more than
        ``context_length - 2`` words keeps its first words and still ends in ``eos``.
        """
        if isinstance(texts, str):
            texts = [texts]
        if context_length < 2:
            raise ConfigError(f"context_length must be >= 2 (room for bos and eos), got {context_length}")
        keep = context_length - 2
        rows = [self.word_ids(t)[:keep] for t in texts]
        lengths = np.fromiter((len(r) + 2 for r in rows), dtype=np.int64, count=len(rows))
        out = np.zeros((len(rows), context_length), dtype=np.int64)
        if rows:
            # Scatter every row's [bos, ids, eos] at once through a length mask.
            flat = np.fromiter(
                (i for r in rows for i in (self.bos_id, *r, self.eos_id)), dtype=np.int64, count=int(lengths.sum())
            )
            out[np.arange(context_length)[None, :] < lengths[:, None]] = flat
        return torch.from_numpy(out)

    def __call__(self, texts: str | Sequence[str], context_length: int) -> torch.Tensor:
        return self.encode(texts, context_length)

    def decode(self, ids: torch.Tensor | Sequence[int] | Sequence[Sequence[int]]) -> str | list[str]:
        """Turn ids back into text: (L,) or a list of ints gives a string, (B, L) a list.

        ``bos`` and ``pad`` are skipped, decoding stops at ``eos``, unknown ids read ``<unk>``.
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() == 2:
                return [self._decode_row(r) for r in ids.tolist()]
            return self._decode_row(ids.tolist())
        ids = list(ids)
        if ids and not isinstance(ids[0], int):
            return [self._decode_row(list(r)) for r in ids]
        return self._decode_row(ids)

    def _decode_row(self, row: list[int]) -> str:
        words = []
        for i in row:
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            words.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return " ".join(words)

    # ------------------------------------------------------------------ saving
    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (stored as the ``extra`` of the CLIP component)."""
        return {"format": FORMAT, "version": VERSION, "words": list(self.words)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Tokenizer":
        """Rebuild a tokenizer written by :meth:`to_dict`."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"not a saved unclip tokenizer (expected format '{FORMAT}'): {str(data)[:100]}")
        if data.get("version") != VERSION:
            raise ConfigError(
                f"tokenizer version {data.get('version')} is not readable by this unclip (reads {VERSION}); upgrade "
                "unclip"
            )
        return cls(data["words"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.words == other.words

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"
