"""A compact vocabulary over the real CLIP BPE tokenizer, for the testbed's tiny CLIP.

The testbed's captions, class names and templates use only a few hundred of CLIP's 49,408 BPE tokens, so the
tiny model embeds only those: text is encoded with the real CLIP BPE (``open_clip``'s ``SimpleTokenizer``) and
each BPE id is remapped to a compact id. The remapping keeps the BPE order, so the end-of-text token is still
the largest id in every sequence (open_clip's text tower pools at ``argmax`` of the ids):

    compact id 0        padding (zeros after EOT, as open_clip pads)
    compact id 1        UNK: any BPE token outside the vocabulary
    compact ids 2..V-3  the world's BPE ids in increasing order
    compact id V-2      start of text (BPE 49406)
    compact id V-1      end of text (BPE 49407, the maximum)

:class:`CompactTokenizer` is called like open_clip's tokenizer: ``tok(texts) -> LongTensor (N, L)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import torch

from visprompt.errors import WeightsError

PAD_ID, UNK_ID = 0, 1
_UNK_BPE = -1  # marker stored in the vocabulary file for the UNK row


@lru_cache(maxsize=1)
def _bpe():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


class CompactTokenizer:
    """CLIP BPE tokenizer with ids remapped to a compact vocabulary (see the module docstring).

    Args:
        bpe_ids: the BPE id of each compact id (``bpe_ids[i]``), as :func:`build_vocabulary` makes it.
        context_length: L, the length every tokenised text is padded or truncated to.
    """

    def __init__(self, bpe_ids: Sequence[int], context_length: int = 32) -> None:
        bpe = _bpe()
        if list(bpe_ids[:2]) != [0, _UNK_BPE] or list(bpe_ids[-2:]) != [bpe.sot_token_id, bpe.eot_token_id]:
            raise WeightsError("vocabulary: expected [pad, UNK, ..., start-of-text, end-of-text] BPE ids")
        self.bpe_ids = list(bpe_ids)
        self.context_length = context_length
        self._to_compact = {b: i for i, b in enumerate(self.bpe_ids) if i != UNK_ID}
        self.vocab_size = len(self.bpe_ids)
        self.sot_token_id = self.vocab_size - 2
        self.eot_token_id = self.vocab_size - 1
        self.pad_token_id, self.unk_token_id = PAD_ID, UNK_ID

    def encode(self, text: str) -> list[int]:
        """Compact ids of ``text`` without start/end tokens (BPE tokens outside the vocabulary become UNK)."""
        return [self._to_compact.get(b, UNK_ID) for b in _bpe().encode(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of compact ids (special tokens and padding dropped, UNK shown as ``<unk>``)."""
        bpe = _bpe()
        words = []
        for i in ids:
            i = int(i)
            if i == UNK_ID:
                words.append("<unk> ")
            elif PAD_ID < i < self.sot_token_id:
                words.append(bpe.decode([self.bpe_ids[i]]))
        return "".join(words).strip()

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """Token ids (N, L): start token, text (truncated to fit), end token, then zeros."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        out = torch.zeros(len(texts), length, dtype=torch.long)  # (N, L)
        for row, text in enumerate(texts):
            ids = [*[self.sot_token_id, *self.encode(text)][: length - 1], self.eot_token_id]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` containing a BPE token outside the vocabulary (empty when all are known)."""
        return [w for w in text.lower().replace(".", " ").split() if UNK_ID in self.encode(w)]

    def save(self, path: str | Path) -> None:
        """Write the vocabulary file (JSON: BPE ids, their strings for reading, the context length)."""
        bpe = _bpe()
        tokens = [bpe.decoder.get(b, "<unk>") if b >= 0 else "<unk>" for b in self.bpe_ids]
        data = {"bpe_ids": self.bpe_ids, "tokens": tokens, "context_length": self.context_length}
        Path(path).write_text(json.dumps(data, indent=0) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CompactTokenizer:
        """Read a vocabulary file written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text())
            return cls(data["bpe_ids"], data["context_length"])
        except (OSError, ValueError, KeyError) as exc:
            raise WeightsError(f"{path}: not a readable testbed vocabulary file ({exc})") from exc


def build_vocabulary(phrases: Iterable[str], context_length: int = 32) -> CompactTokenizer:
    """The compact tokenizer covering every BPE token of ``phrases`` (order of BPE ids kept)."""
    bpe = _bpe()
    used = sorted({b for text in phrases for b in bpe.encode(text)} - {0, bpe.sot_token_id, bpe.eot_token_id})
    return CompactTokenizer([0, _UNK_BPE, *used, bpe.sot_token_id, bpe.eot_token_id], context_length)
