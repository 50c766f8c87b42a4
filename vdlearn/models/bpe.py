"""CLIP's tokenizer: byte-level BPE over a 49,408-token vocabulary, 77 ids per caption.

Every CLIP text tower (OpenAI's CLIP, OpenCLIP ViT-H/14 in VideoCrafter, SD 1.4's
CLIP ViT-L/14 in LaVie) reads the same ids. A caption becomes ids in four steps:

1. **clean**: repair a few Unicode look-alikes (curly quotes, ligatures, full-width
   forms), undo HTML escapes (twice), collapse white space, lower-case;
2. **split** into pieces: runs of letters, single digits, runs of other symbols, and
   the English contractions ``'s 't 're 've 'm 'll 'd``; spaces separate pieces and are
   dropped;
3. **bytes -> symbols**: the UTF-8 bytes of a piece are written with 256 printable
   stand-in characters (so any text, emoji included, has a spelling), the last symbol
   marked ``</w>`` (end of word);
4. **merge**: repeatedly join the adjacent pair that comes first in the merge list
   (the BPE ranks), until no listed pair is left; each final symbol is one id.

Then ``<start_of_text>`` (49406) goes in front, ``<end_of_text>`` (49407) at the end; a
caption longer than the context is cut to 77 ids with its last id replaced by
``<end_of_text>``; shorter ones are padded. OpenCLIP (``open_clip.tokenize``,
VideoCrafter) pads with 0; SD's ``CLIPTokenizer`` (LaVie) pads with 49407. The padded
positions never influence the real tokens (the text transformer is causal), but their
own output vectors do differ, and the U-Nets attend to all 77.

Cleaning: OpenCLIP runs ``ftfy.fix_text`` first, a large repair library mostly for
mojibake (text decoded with the wrong codec, e.g. ``"cafÃ©"``). vdlearn does not depend
on it; it reproduces what ``fix_text`` changes in text that is valid Unicode: Latin
ligatures, full-width and half-width forms, curly quotes to straight ones, control
characters, NFC normalisation. Not reproduced, so such ids differ from OpenCLIP's:
mojibake repair, C1 control bytes read as Windows-1252, terminal colour escapes, and the
extra HTML unescaping ftfy does, which matters only for entities escaped three times.
``tests/test_clip_encoders.py`` checks the ids against ``open_clip.tokenize`` on a set of
awkward captions.

The vocabulary is OpenAI CLIP's ``bpe_simple_vocab_16e6.txt.gz`` (MIT), shipped in
``vdlearn/models/assets/`` (see the README there). Reproduces ``open_clip/tokenizer.py``
(``SimpleTokenizer``, ``tokenize``). Taught in notebook 10_pretrained.
"""

from __future__ import annotations

import functools
import gzip
import html
import itertools
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import regex
import torch

#: The shipped merge list (OpenAI CLIP's vocabulary, as in the open_clip_torch wheel).
VOCAB_PATH = Path(__file__).parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
#: How many merges CLIP uses from the file (its first line is a header).
NUM_MERGES = 49152 - 256 - 2
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"

# Step 2: contractions, letter runs, single digits, runs of anything else that is not a space.
_PIECES = regex.compile(
    r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+", regex.IGNORECASE
)
# Step 1 repairs (what ftfy.fix_text changes in valid Unicode text), applied in ftfy's order.
_LIGATURES = str.maketrans({"\u0132": "IJ", "\u0133": "ij", "\u0149": "\u02bcn", "\u01c4": "D\u017d",
                            "\u01c5": "D\u017e", "\u01c6": "d\u017e", "\u01c7": "LJ", "\u01c8": "Lj",
                            "\u01c9": "lj", "\u01ca": "NJ", "\u01cb": "Nj", "\u01cc": "nj", "\u01f1": "DZ",
                            "\u01f2": "Dz", "\u01f3": "dz", "\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl",
                            "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "\u017ft", "\ufb06": "st"})
_WIDE = regex.compile(r"[\uff01-\uffef]")  # full-width and half-width forms -> their usual form (NFKC)
_SINGLE_QUOTES = regex.compile(r"[\u02bc\u2018-\u201b]")
_DOUBLE_QUOTES = regex.compile(r"[\u201c-\u201f]")
_CONTROL = regex.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]")


def clean_text(text: str) -> str:
    """Step 1: the caption as the tokenizer sees it (see the module docstring)."""
    text = text.translate(_LIGATURES).replace("\u3000", " ")  # ideographic space
    text = _WIDE.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)
    text = _DOUBLE_QUOTES.sub('"', _SINGLE_QUOTES.sub("'", text))
    text = unicodedata.normalize("NFC", _CONTROL.sub("", text))
    text = html.unescape(html.unescape(text))
    return regex.sub(r"\s+", " ", text).strip().lower()


@functools.cache
def byte_symbols() -> dict[int, str]:
    """Step 3: byte value -> a printable stand-in character.

    Printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for themselves;
    the other 68 bytes (space, control bytes, ...) get the characters from U+0100 on, in order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(others)})
    return table  # in this order (printable bytes first) the symbols are the first 256 vocabulary ids


def _merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Every adjacent occurrence of ``pair`` in ``symbols`` joined, left to right."""
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


class BPETokenizer:
    """Captions -> CLIP token ids, ``(b, context_length)`` LongTensor.

    ``pad_id`` 0 is OpenCLIP's padding (VideoCrafter), 49407 (``<end_of_text>``) SD's (LaVie).

    >>> BPETokenizer().encode("A red 3 moving left")
    [320, 736, 274, 3584, 1823]
    """

    def __init__(self, context_length: int = 77, pad_id: int = 0, vocab_path: str | Path = VOCAB_PATH):
        path = Path(vocab_path)
        if not path.exists():
            raise FileNotFoundError(f"The CLIP vocabulary {path} is missing; it ships with vdlearn "
                                    f"(vdlearn/models/assets/). Reinstall the package.")
        with gzip.open(path) as f:
            lines = f.read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
        symbols = list(byte_symbols().values())
        # ids: 256 bytes, the same 256 as word endings, one id per merge result, then the two specials
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [START_OF_TEXT, END_OF_TEXT]
        self.ids: dict[str, int] = {s: i for i, s in enumerate(vocab)}
        self.symbols: list[str] = vocab
        self.ranks: dict[tuple[str, str], int] = {m: r for r, m in enumerate(merges)}
        self.start_id = self.ids[START_OF_TEXT]  # 49406
        self.end_id = self.ids[END_OF_TEXT]  # 49407
        self.context_length = context_length
        self.pad_id = pad_id
        self._cache: dict[str, list[str]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)  # 49408

    def bpe(self, piece: str) -> list[str]:
        """Step 4: the symbols of one piece (already written as byte stand-ins)."""
        if piece not in self._cache:
            symbols = [*piece[:-1], piece[-1] + "</w>"]
            while len(symbols) > 1:
                pairs = set(itertools.pairwise(symbols))
                best = min(pairs, key=lambda p: self.ranks.get(p, len(self.ranks)))
                if best not in self.ranks:
                    break
                symbols = _merge_pair(symbols, best)
            self._cache[piece] = symbols
        return self._cache[piece]

    def encode(self, text: str) -> list[int]:
        """The ids of ``text`` without start/end markers, padding or truncation."""
        table = byte_symbols()
        ids = []
        for piece in _PIECES.findall(clean_text(text)):
            spelled = "".join(table[b] for b in piece.encode("utf-8"))
            ids += [self.ids[s] for s in self.bpe(spelled)]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids back to (cleaned) text; start, end and padding ids are skipped."""
        skip = {self.start_id, self.end_id, self.pad_id}
        inverse = {c: b for b, c in byte_symbols().items()}
        raw = bytearray()
        for i in ids:
            if int(i) in skip:
                continue
            symbol = self.symbols[int(i)]
            raw += bytes(inverse[c] for c in symbol.removesuffix("</w>"))
            if symbol.endswith("</w>"):
                raw += b" "
        return raw.decode("utf-8", errors="replace").strip()

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        """``(b, context_length)`` ids: start, caption, end, padding; long captions cut (end kept)."""
        if isinstance(texts, str):
            texts = [texts]
        if not all(isinstance(t, str) for t in texts):
            raise TypeError(f"Expected a caption (str) or a list of captions, got {[type(t).__name__ for t in texts]}.")
        out = torch.full((len(texts), self.context_length), self.pad_id, dtype=torch.long)  # (b, 77)
        for row, text in enumerate(texts):
            ids = [self.start_id, *self.encode(text), self.end_id][: self.context_length]
            ids[-1] = self.end_id  # a cut caption still ends with <end_of_text>
            out[row, : len(ids)] = torch.tensor(ids)
        return out
