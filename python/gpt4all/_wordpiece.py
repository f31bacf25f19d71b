"""BERT's WordPiece tokenizer, as the models' own tokenizer (Hugging Face's
BertTokenizer) splits text.

llama.cpp's WordPiece tokenizer drops characters that BERT keeps: Hangul
vowels after decomposition, and spacing vowel signs of Indic scripts (Unicode
category Mc), so Korean or Hindi text came out as other tokens and other
vectors than sentence-transformers gives. Embed4All tokenizes BERT models
here instead, with the vocabulary read from the model.

The steps are BERT's: drop control characters, split on whitespace, put
spaces around CJK ideographs, lowercase and strip accents (category Mn after
NFD) for uncased vocabularies, split off punctuation, then the longest
vocabulary match from the start of each word ("##" marks a piece inside a
word), [UNK] for a word that does not split.
"""
from __future__ import annotations

import unicodedata
from typing import Callable, Dict, List, Optional

MAX_WORD_CHARS = 100  # longer words are [UNK], as BERT does

# CJK ideograph blocks, as BERT lists them
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # BERT counts every non-letter, non-digit ASCII character as punctuation
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK)


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf")


class WordPiece:
    """Splits text into a BERT vocabulary's token ids.

    Args:
        vocab: token text to id, with "##" before pieces inside a word.
        unk: the id of [UNK].
        lowercase: the vocabulary is uncased (lowercase, strip accents).
    """

    def __init__(self, vocab: Dict[str, int], unk: int, lowercase: bool):
        self.vocab = vocab
        self.unk = unk
        self.lowercase = lowercase
        self._longest = max((len(t) for t in vocab), default=1)

    @classmethod
    def from_model(cls, n_vocab: int, piece: Callable[[int], bytes], lowercase: Optional[bool] = None,
                   unk_text: str = "[UNK]") -> Optional["WordPiece"]:
        """Rebuilds the vocabulary from llama.cpp's form of it (a word's first
        piece stored after a space, inner pieces bare, [SPECIAL] tokens as
        they are); None when the model's vocabulary is not BERT's.
        lowercase: from the model's metadata; None: uncased when (almost) no
        token has a capital letter."""
        vocab: Dict[str, int] = {}
        for i in range(n_vocab):
            text = piece(i).decode("utf-8", "replace")
            if text.startswith(" "):
                key = text[1:]
            elif text.startswith("[") and text.endswith("]"):
                key = text
            else:
                key = "##" + text
            vocab.setdefault(key, i)
        if unk_text not in vocab or "[CLS]" not in vocab:
            return None
        if lowercase is None:
            capitals = sum(1 for t in vocab if not t.startswith("[") and any(c.isupper() for c in t))
            lowercase = capitals < len(vocab) // 100
        return cls(vocab, vocab[unk_text], lowercase)

    def _normalize(self, text: str) -> str:
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                out.append(" ")
            elif _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        text = "".join(out)
        if self.lowercase:
            text = text.lower()
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        return text

    def _words(self, text: str) -> List[str]:
        words: List[str] = []
        for chunk in text.split():
            if chunk.isascii() and chunk.isalnum():
                words.append(chunk)
                continue
            start = 0
            for k, ch in enumerate(chunk):
                if _is_punctuation(ch):
                    if k > start:
                        words.append(chunk[start:k])
                    words.append(ch)
                    start = k + 1
            if start < len(chunk):
                words.append(chunk[start:])
        return words

    def encode(self, text: str) -> List[int]:
        """The ids of text, without [CLS] and [SEP]."""
        vocab = self.vocab
        ids: List[int] = []
        for word in self._words(self._normalize(text)):
            found = vocab.get(word)
            if found is not None:
                ids.append(found)
                continue
            if len(word) > MAX_WORD_CHARS:
                ids.append(self.unk)
                continue
            pieces: List[int] = []
            start = 0
            while start < len(word):
                end = min(len(word), start + self._longest)
                match = None
                while end > start:
                    sub = word[start:end] if start == 0 else "##" + word[start:end]
                    match = vocab.get(sub)
                    if match is not None:
                        break
                    end -= 1
                if match is None:
                    pieces = [self.unk]
                    break
                pieces.append(match)
                start = end
            ids.extend(pieces)
        return ids
