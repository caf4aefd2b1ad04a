"""The frozen LAION-CLAP encoder, built offline.

laion-clap 1.1.7 reaches the model hub in three places (tokenizers built at import time, the
RoBERTa tokenizer in ``CLAP_Module``, ``RobertaModel.from_pretrained`` for the text tower) and
imports torchvision, which has no working wheel beside CPU torch. :func:`import_laion_clap` makes
``import laion_clap`` work with no network and no torchvision, and leaves no stand-in module behind.
The model is then built from its config (text tower from the RoBERTa config, never from the hub)
and weights come from an explicit checkpoint path through laion-clap's own loader, or from a
seeded random initialisation that is logged loudly and recorded as ``random-init``.

Audio is made deterministic *before* the model sees it: clips longer than the 10 s window are
centre-cropped (or cut into windows whose embeddings are averaged), shorter ones repeat-padded,
exactly as laion-clap's ``repeatpad`` does, so laion-clap's random crop never runs.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import logging
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from diffusion_link.assets import MissingAssetError, gpt2_tokenizer_dir, hf_cached_snapshot, sha256_file

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
WINDOW_SAMPLES = 480_000  # laion-clap's 10 s window at 48 kHz

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


# ----------------------------------------------------------------------------------------------
# Offline import
# ----------------------------------------------------------------------------------------------


class _FrozenBatchNorm2d(torch.nn.Module):
    """torchvision.ops.misc.FrozenBatchNorm2d: the one torchvision class laion-clap really uses."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        for name, init in (("weight", torch.ones), ("bias", torch.zeros), ("running_mean", torch.zeros), ("running_var", torch.ones)):
            self.register_buffer(name, init(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)


def _torchvision_works() -> bool:
    try:
        importlib.import_module("torchvision.ops.misc")
        return True
    except Exception:  # CUDA-built torchvision beside CPU torch fails with RuntimeError, not ImportError
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        return False


@contextlib.contextmanager
def _torchvision_stand_in():
    """Put a minimal torchvision in ``sys.modules`` for the duration of laion-clap's import only.

    Left behind, it would make torchmetrics and transformers believe torchvision exists.
    """
    if _torchvision_works():
        yield
        return

    def unavailable(*_args, **_kwargs):
        raise RuntimeError(
            "torchvision is not installed: laion-clap's fusion models need it (and torchaudio). "
            "Use a non-fusion CLAP (enable_fusion: false) or install torch/torchvision/torchaudio builds that match."
        )

    names = ["torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.datasets", "torchvision.transforms"]
    modules = {name: types.ModuleType(name) for name in names}
    for name, module in modules.items():
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    modules["torchvision.ops.misc"].FrozenBatchNorm2d = _FrozenBatchNorm2d
    modules["torchvision.ops"].misc = modules["torchvision.ops.misc"]
    # Image transforms of laion-clap's image code paths (never used for audio/text) and fusion's Resize.
    for name in ("Normalize", "Compose", "RandomResizedCrop", "InterpolationMode", "ToTensor", "Resize", "CenterCrop"):
        setattr(modules["torchvision.transforms"], name, unavailable)
    for name in ("ops", "datasets", "transforms"):
        setattr(modules["torchvision"], name, modules[f"torchvision.{name}"])
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in names:
            if sys.modules.get(name) is modules[name]:
                del sys.modules[name]


class _UnavailableTokenizer:
    """Stands for a tokenizer laion-clap builds at import time for its *training* code only."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args, **kwargs):
        raise MissingAssetError(
            f"The '{self.name}' tokenizer is not in the Hugging Face cache; laion-clap's training "
            f"data code needs it. Run `huggingface-cli download {self.name}` on a machine with network."
        )


@contextlib.contextmanager
def _hub_free_tokenizers():
    """During laion-clap's import, tokenizers come from the warm cache or are placeholders."""
    import transformers

    def from_cache(original, name, *args, **kwargs):
        try:
            return original(name, *args, local_files_only=True, **kwargs)
        except Exception:  # not cached, or cached incompletely: the training code alone needs it
            return _UnavailableTokenizer(name)

    classes = [getattr(transformers, n) for n in ("BertTokenizer", "RobertaTokenizer", "BartTokenizer")]
    with _patched_from_pretrained(classes, from_cache):
        yield


@contextlib.contextmanager
def _patched_from_pretrained(classes, replacement):
    """Temporarily route ``cls.from_pretrained(...)`` to ``replacement(original, ...)``."""
    saved = [(cls, cls.__dict__.get("from_pretrained"), cls.from_pretrained) for cls in classes]
    for cls, _own, bound in saved:
        cls.from_pretrained = staticmethod(lambda *a, _bound=bound, **kw: replacement(_bound, *a, **kw))
    try:
        yield
    finally:
        for cls, own, _bound in saved:
            if own is None:
                del cls.from_pretrained
            else:
                cls.from_pretrained = own


def import_laion_clap() -> types.ModuleType:
    """``import laion_clap`` with no network and no torchvision; returns its ``hook`` module."""
    if "laion_clap.hook" in sys.modules:
        return sys.modules["laion_clap.hook"]
    import transformers

    # transformers decides whether torchvision exists when it is first imported, and resolves its
    # lazy model classes on first access: do both before the stand-in exists.
    for name in ("BertModel", "RobertaModel", "BartModel"):
        getattr(transformers, name)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its import-time tokenizer probing is noise to our users
    try:
        with _quiet_hub(), _hub_free_tokenizers(), _torchvision_stand_in():
            importlib.import_module("laion_clap")
    finally:
        transformers.logging.set_verbosity(verbosity)
    return sys.modules["laion_clap.hook"]


@contextlib.contextmanager
def _quiet_hub():
    """Make any hub look-up that slips through fail at once instead of retrying for minutes."""
    import os

    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ----------------------------------------------------------------------------------------------
# Deterministic waveform -> fixed windows
# ----------------------------------------------------------------------------------------------

CropPolicy = Literal["centre", "chunk_average"]


def quantise_int16(wave: np.ndarray) -> np.ndarray:
    """laion-clap's int16 round trip, which its own pipeline always applies."""
    clipped = np.clip(wave, -1.0, 1.0)
    return ((clipped * 32767.0).astype(np.int16) / 32767.0).astype(np.float32)


def repeat_pad(wave: np.ndarray, length: int = WINDOW_SAMPLES) -> np.ndarray:
    """laion-clap's ``repeatpad``: repeat whole copies, then zero-pad to ``length``."""
    if len(wave) == 0:
        raise ValueError("empty waveform")
    if len(wave) >= length:
        return wave[:length]
    wave = np.tile(wave, length // len(wave))
    return np.pad(wave, (0, length - len(wave)))


def to_windows(wave: np.ndarray, policy: CropPolicy = "centre", length: int = WINDOW_SAMPLES) -> np.ndarray:
    """Deterministic fixed-length windows of one clip: shape (n_windows, length).

    ``centre``: one window, the middle of a long clip. ``chunk_average``: consecutive windows that
    cover the whole clip (the last one repeat-padded), whose embeddings the encoder averages.
    """
    if len(wave) <= length:
        return repeat_pad(wave, length)[None]
    if policy == "centre":
        start = (len(wave) - length) // 2
        return wave[start : start + length][None]
    if policy == "chunk_average":
        chunks = [wave[i : i + length] for i in range(0, len(wave), length)]
        if len(chunks) > 1 and len(chunks[-1]) < length // 10:  # a sliver of tail says little
            chunks = chunks[:-1]
        return np.stack([repeat_pad(c, length) for c in chunks])
    raise ValueError(f"unknown crop policy {policy!r}; use 'centre' or 'chunk_average'")


# ----------------------------------------------------------------------------------------------
# The encoder
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClapConfig:
    """Everything that changes CLAP features. Its :meth:`ClapEncoder.describe` goes into every store.

    Args:
        checkpoint: path to a laion-clap checkpoint (e.g. ``630k-audioset-best.pt``). ``None``
            builds a random-init model (seeded), recorded as ``random-init`` in every artifact.
        amodel: audio tower (``HTSAT-tiny`` for the 630k checkpoints, ``HTSAT-base`` for the music ones).
        tmodel: text tower (``roberta`` for the official checkpoints).
        tokenizer_path: folder of the text tower's tokenizer. Default: the warm Hugging Face cache
            (``roberta-base``); for a random-init model a GPT-2 BPE substitute is used when that is absent.
        crop: ``centre`` (default) or ``chunk_average`` for clips longer than 10 s.
        quantise_int16: apply laion-clap's int16 round trip to the waveform (its own pipeline does).
        seed: seed of the random initialisation (ignored with a checkpoint).
        enable_fusion: laion-clap's fusion models (need torchvision and torchaudio; not supported yet).
    """

    checkpoint: str | None = None
    amodel: str = "HTSAT-tiny"
    tmodel: str = "roberta"
    tokenizer_path: str | None = None
    crop: CropPolicy = "centre"
    quantise_int16: bool = True
    seed: int = 0
    enable_fusion: bool = False


class ClapEncoder(torch.nn.Module):
    """Frozen laion-clap model with deterministic, batched audio and text encoding."""

    def __init__(self, config: ClapConfig | None = None):
        super().__init__()
        self.config = config = config or ClapConfig()
        if config.enable_fusion:
            raise NotImplementedError(
                "Fusion CLAP models choose random mel chunks and need torchvision/torchaudio; they are not "
                "supported. Use a non-fusion checkpoint such as 630k-audioset-best.pt."
            )
        if config.crop not in ("centre", "chunk_average"):
            raise ValueError(f"crop must be 'centre' or 'chunk_average', not {config.crop!r}")
        hook = import_laion_clap()
        self._checkpoint_sha256 = None
        if config.checkpoint is not None and not Path(config.checkpoint).is_file():
            raise MissingAssetError(
                f"CLAP checkpoint not found: {config.checkpoint}. Download an official one once, e.g. "
                "https://huggingface.co/lukewys/laion_clap/resolve/main/630k-audioset-best.pt, and pass its path."
            )
        with _offline_text_tower(config.tmodel), torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model, model_cfg = hook.create_model(config.amodel, config.tmodel, precision="fp32", device="cpu", enable_fusion=False)
        if config.checkpoint is None:
            log.warning(
                "CLAP IS RANDOMLY INITIALISED (seed %d): no checkpoint was given. Embeddings are recorded as "
                "'random-init' and mean nothing about audio or text. Pass encoder.checkpoint=630k-audioset-best.pt "
                "for real features.",
                config.seed,
            )
        else:
            self._checkpoint_sha256 = sha256_file(config.checkpoint)
            model.load_state_dict(load_clap_state_dict(config.checkpoint, hook))
        model.eval().requires_grad_(False)
        self.model = model
        self.model_cfg = model_cfg
        self.tokenizer, self._tokenizer_source = _text_tokenizer(config)
        if config.checkpoint is not None and self._tokenizer_source.startswith("substitute"):
            raise MissingAssetError(
                f"A real CLAP checkpoint needs the real {_TEXT_TOWERS[config.tmodel]} tokenizer, which is not in "
                f"the Hugging Face cache. Run `huggingface-cli download {_TEXT_TOWERS[config.tmodel]}` once on a "
                "machine with network, or pass encoder.tokenizer_path=<folder with its tokenizer files>."
            )

    sample_rate = SAMPLE_RATE

    @property
    def dim(self) -> int:
        return int(self.model.joint_embed_shape)

    def train(self, mode: bool = True):  # frozen: never leave eval mode (dropout, SpecAugment)
        return super().train(False)

    def describe(self) -> dict:
        """The encoder's identity: goes into every feature store and bridge artifact."""
        cfg = self.config
        return {
            "family": "laion-clap",
            "laion_clap_version": _laion_version(),
            "amodel": cfg.amodel,
            "tmodel": cfg.tmodel,
            "weights": f"sha256:{self._checkpoint_sha256}" if self._checkpoint_sha256 else f"random-init(seed={cfg.seed})",
            "checkpoint_path": str(cfg.checkpoint) if cfg.checkpoint else None,
            "tokenizer": self._tokenizer_source,
            "dim": self.dim,
            "sample_rate": SAMPLE_RATE,
            "window_samples": WINDOW_SAMPLES,
            "crop": cfg.crop,
            "pad": "repeatpad",
            "quantise_int16": cfg.quantise_int16,
        }

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode_audio(self, waves: list[np.ndarray]) -> torch.Tensor:
        """Embed mono 48 kHz waveforms of any length: (N, D) float32, unit norm."""
        windows, owner = [], []
        for i, wave in enumerate(waves):
            wave = np.asarray(wave, dtype=np.float32)
            if self.config.quantise_int16:
                wave = quantise_int16(wave)
            w = to_windows(wave, self.config.crop)
            windows.append(w)
            owner.extend([i] * len(w))
        batch = torch.from_numpy(np.concatenate(windows)).to(self.device)
        inputs = {"waveform": batch, "longer": torch.zeros(len(batch), 1, dtype=torch.bool, device=self.device)}
        emb = self.model.audio_projection(self.model.encode_audio(inputs, device=self.device)["embedding"])
        emb = F.normalize(emb.float(), dim=-1)
        if len(emb) != len(waves):  # chunk_average: mean of each clip's windows, re-normalised
            index = torch.tensor(owner, device=emb.device)
            summed = torch.zeros(len(waves), emb.shape[1], device=emb.device).index_add_(0, index, emb)
            emb = F.normalize(summed, dim=-1)
        return emb.cpu()

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Embed captions: (N, D) float32, unit norm."""
        if not texts:
            return torch.zeros(0, self.dim)
        tokens = self.tokenizer(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return self.model.get_text_embedding(tokens).float().cpu()


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


__all__ = [
    "ClapConfig",
    "ClapEncoder",
    "SAMPLE_RATE",
    "WINDOW_SAMPLES",
    "import_laion_clap",
    "load_clap_state_dict",
    "save_clap_checkpoint",
    "to_windows",
    "repeat_pad",
]
