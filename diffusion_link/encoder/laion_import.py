"""``import laion_clap`` offline and without torchvision.

laion-clap 1.1.7 reaches the model hub while it is imported (tokenizers for its training code) and
imports torchvision, which has no working wheel beside CPU torch. :func:`import_laion_clap` makes the
import work with no network and no torchvision, and leaves no stand-in module behind.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import sys
import types

import torch

from diffusion_link.assets import MissingAssetError
from diffusion_link.offline import hub_offline


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
        with hub_offline(), _hub_free_tokenizers(), _torchvision_stand_in():
            importlib.import_module("laion_clap")
    finally:
        transformers.logging.set_verbosity(verbosity)
    return sys.modules["laion_clap.hook"]
