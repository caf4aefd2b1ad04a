"""CLAP checkpoints and tokenizers, offline: laion-clap's own loader, the official layout, the text
tower built from its config (never from the hub), and its tokenizer from a path or a warm cache."""

from __future__ import annotations

import contextlib
import types
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from diffusion_link.assets import MissingAssetError, gpt2_tokenizer_dir, hf_cached_snapshot
from diffusion_link.encoder.laion_import import _patched_from_pretrained, import_laion_clap

if TYPE_CHECKING:
    from diffusion_link.encoder.clap import ClapConfig, ClapEncoder

# roberta-base's architecture, so the text tower is built without the hub. Same numbers as the
# hub's config.json; a warm cache's own config is preferred when present.
ROBERTA_BASE_CONFIG = dict(
    vocab_size=50265,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=514,
    type_vocab_size=1,
    initializer_range=0.02,
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)
_TEXT_TOWERS = {"roberta": "roberta-base", "bert": "bert-base-uncased", "bart": "facebook/bart-base"}
POSITION_IDS_KEY = "text_branch.embeddings.position_ids"


def load_clap_state_dict(path: str | Path, hook: types.ModuleType | None = None) -> dict:
    """Read a CLAP checkpoint through laion-clap's own loader.

    That loader deletes ``text_branch.embeddings.position_ids`` unconditionally: official
    checkpoints have the key, state dicts saved from a current model do not. Both are accepted.
    """
    hook = hook or import_laion_clap()
    try:
        return hook.load_state_dict(str(path), skip_params=True)
    except KeyError as err:
        if POSITION_IDS_KEY not in str(err):
            raise
    state = torch.load(str(path), map_location="cpu", weights_only=False)
    state = state.get("state_dict", state)
    return {k.removeprefix("module."): v for k, v in state.items() if not k.endswith(POSITION_IDS_KEY)}


def save_clap_checkpoint(encoder: ClapEncoder, path: str | Path) -> Path:
    """Write ``encoder``'s weights in the layout of the official checkpoints
    (``{"epoch", "state_dict": {"module.<name>": tensor}}``, ``position_ids`` included)."""
    state = {f"module.{k}": v.clone() for k, v in encoder.model.state_dict().items()}
    key = f"module.{POSITION_IDS_KEY}"
    if key not in state and encoder.config.tmodel in ("roberta", "bert"):
        n = encoder.model.text_branch.config.max_position_embeddings
        state[key] = torch.arange(n).unsqueeze(0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 0, "state_dict": state}, path)
    return path


@contextlib.contextmanager
def _offline_text_tower(tmodel: str):
    """laion-clap calls ``<Tower>Model.from_pretrained(hub_id)``; build it from a config instead.

    The weights are replaced by the checkpoint's anyway; only the architecture matters.
    """
    import transformers

    if tmodel not in _TEXT_TOWERS:
        yield
        return
    model_cls = {"roberta": transformers.RobertaModel, "bert": transformers.BertModel, "bart": transformers.BartModel}[tmodel]
    config_cls = {"roberta": transformers.RobertaConfig, "bert": transformers.BertConfig, "bart": transformers.BartConfig}[tmodel]

    def from_config(_original, name, *args, **kwargs):
        cached = hf_cached_snapshot(name)
        if cached is not None:
            config = config_cls.from_pretrained(cached)
        elif tmodel == "roberta":
            config = config_cls(**ROBERTA_BASE_CONFIG)
        else:
            raise MissingAssetError(f"The {name} config is not in the Hugging Face cache; run `huggingface-cli download {name}`.")
        return model_cls(config)

    with _patched_from_pretrained([model_cls], from_config):
        yield


def _text_tokenizer(config: ClapConfig):
    from transformers import AutoTokenizer

    hub_id = _TEXT_TOWERS.get(config.tmodel, config.tmodel)
    if config.tokenizer_path is not None:
        if not Path(config.tokenizer_path).exists():
            raise MissingAssetError(f"tokenizer folder not found: {config.tokenizer_path}")
        tok = AutoTokenizer.from_pretrained(config.tokenizer_path)
        if tok.pad_token is None:  # GPT-2-style vocabularies have none; CLAP pads to 77 tokens
            tok.pad_token = tok.eos_token
        return tok, f"path:{config.tokenizer_path}"
    cached = hf_cached_snapshot(hub_id, "vocab.json" if config.tmodel != "bert" else "vocab.txt")
    if cached is not None:
        return AutoTokenizer.from_pretrained(hub_id, local_files_only=True), f"hf:{hub_id}"
    # Random-init only (the caller refuses this with a real checkpoint): GPT-2's byte-level BPE is
    # RoBERTa's algorithm with other ids, and every GPT-2 id fits RoBERTa's embedding table.
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast.from_pretrained(gpt2_tokenizer_dir())
    tok.pad_token = tok.eos_token
    return tok, "substitute:gpt2-bpe"


def _laion_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("laion-clap")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"
