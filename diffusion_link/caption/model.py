"""Projector + frozen causal LM with a LoRA adapter: captions from one embedding.

The embedding is projected to ``prefix_tokens`` soft tokens placed where ``{audio}`` stands in the
prompt (inside the tokenizer's chat template when it has one). Training computes the loss on the
caption tokens only. Usable without Lightning:

    model = CaptionModel.from_pretrained("artifacts/caption/zero-shot/export")
    captions = model.generate(embeddings, num_beams=4)

An export records its base LM's identity (name + the sha256 of its files, :func:`lm_identity`); loading
refuses an LM whose files differ. ``save_pretrained(..., merge=True)`` writes the LoRA-merged LM itself
(``merged/``), which then needs no base LM.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from diffusion_link.caption.llm import identity_mismatch, lm_identity, load_llm
from diffusion_link.evaluation.captioning import normalise
from diffusion_link.export import ExportError, format_tag, load_tensors, read_export, write_export

AUDIO_SLOT = "{audio}"
EXPORT_FORMAT = format_tag("captioner")
ADAPTER, PROJECTOR, MERGED = "adapter", "projector.safetensors", "merged"


@dataclass
class LoraOptions:
    """LoRA adapter (peft). Defaults: DRCap / SLAM-LLM's recipe (r 8, alpha 32, dropout 0.05).
    ``target_modules: null`` takes peft's default for the architecture: q_proj and v_proj for
    Llama-family models (DRCap's choice), c_attn for GPT-2."""

    r: int = 8
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | None = None


@dataclass
class DecodingOptions:
    """Generation settings (reported with the scores)."""

    num_beams: int = 4
    max_new_tokens: int = 30
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0


@dataclass
class CaptionerConfig:
    """Args:
    llm: local folder, Hugging Face id (warm cache) or ``smollm2-135m-instruct`` / ``tiny-gpt2``.
    dim: embedding dimension D.
    prefix_tokens: k soft tokens the embedding becomes.
    projector: ``linear`` or ``mlp`` (2 layers).
    prompt: the user prompt; ``{audio}`` marks where the soft tokens go.
    use_chat_template: wrap the prompt in the tokenizer's chat template when it has one.
    lora: the adapter settings.
    """

    llm: str = "smollm2-135m-instruct"
    dim: int = 512
    prefix_tokens: int = 1
    projector: Literal["linear", "mlp"] = "linear"
    prompt: str = "{audio} Describe the audio you hear. Output a single short caption."
    use_chat_template: bool = True
    lora: LoraOptions = field(default_factory=LoraOptions)

    @classmethod
    def from_dict(cls, values: dict) -> "CaptionerConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        if isinstance(values.get("lora"), dict):
            values["lora"] = LoraOptions(**values["lora"])
        return cls(**values)


class Projector(nn.Module):
    def __init__(self, dim: int, hidden: int, tokens: int, kind: str):
        super().__init__()
        self.tokens, self.hidden = tokens, hidden
        if kind == "linear":
            self.net = nn.Linear(dim, hidden * tokens)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden * tokens))
        else:
            raise ValueError(f"projector must be 'linear' or 'mlp', not {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(len(x), self.tokens, self.hidden)


class CaptionModel(nn.Module):
    def __init__(self, config: CaptionerConfig | None = None, adapter: str | Path | None = None, merged: str | Path | None = None):
        """``adapter``: a saved peft adapter over ``config.llm``; ``merged``: a folder of the LoRA-merged LM
        (used as it is, no adapter); neither: a fresh adapter."""
        super().__init__()
        from peft import LoraConfig, PeftModel, get_peft_model

        self.config = config = config or CaptionerConfig()
        if AUDIO_SLOT not in config.prompt:
            raise ValueError(f"the prompt must contain {AUDIO_SLOT} where the audio tokens go: {config.prompt!r}")
        lm, self.tokenizer = load_llm(str(merged) if merged is not None else config.llm)
        lm.requires_grad_(False)
        if merged is not None:
            self.lm = lm
        elif adapter is not None:
            self.lm = PeftModel.from_pretrained(lm, str(adapter), is_trainable=True)
        else:
            lora = LoraConfig(
                r=config.lora.r,
                lora_alpha=config.lora.alpha,
                lora_dropout=config.lora.dropout,
                target_modules=list(config.lora.target_modules) if config.lora.target_modules else None,
                task_type="CAUSAL_LM",
            )
            self.lm = get_peft_model(lm, lora)
        hidden = lm.get_input_embeddings().embedding_dim
        self.projector = Projector(config.dim, hidden, config.prefix_tokens, config.projector)
        before, after = self._prompt_parts()
        self.register_buffer("before_ids", torch.tensor(before, dtype=torch.long), persistent=False)
        self.register_buffer("after_ids", torch.tensor(after, dtype=torch.long), persistent=False)

    # -- prompt ------------------------------------------------------------------------------------

    def _prompt_parts(self) -> tuple[list[int], list[int]]:
        tok, prompt = self.tokenizer, self.config.prompt
        if self.config.use_chat_template and tok.chat_template:
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
            before, after = text.split(AUDIO_SLOT, 1)
            return tok(before, add_special_tokens=False)["input_ids"], tok(after, add_special_tokens=False)["input_ids"]
        before, after = prompt.split(AUDIO_SLOT, 1)
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        return bos + tok(before, add_special_tokens=False)["input_ids"], tok(after + "\n", add_special_tokens=False)["input_ids"]

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids)

    def _rows(self, embeddings: torch.Tensor, captions: list[str] | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each clip's input embeddings (prompt, soft tokens, caption) and labels (caption tokens only)."""
        prefix = self.projector(embeddings.float()).to(self._embed(self.before_ids[:1]).dtype)
        device = prefix.device
        eos = self.tokenizer.eos_token_id
        caption_ids = (
            [
                self.tokenizer(" " + normalise(c) if not self.tokenizer.chat_template else normalise(c), add_special_tokens=False)["input_ids"] + [eos]
                for c in captions
            ]
            if captions
            else None
        )
        head = len(self.before_ids) + self.config.prefix_tokens + len(self.after_ids)
        rows, labels = [], []
        for i in range(len(embeddings)):
            tail = torch.tensor(caption_ids[i], device=device) if captions else self.after_ids[:0]
            rows.append(torch.cat([self._embed(self.before_ids), prefix[i], self._embed(self.after_ids), self._embed(tail)]))
            labels.append(torch.cat([torch.full((head,), -100, device=device), tail]))
        return rows, labels

    def _inputs(self, embeddings: torch.Tensor, captions: list[str] | None = None):
        """Left-padded inputs_embeds, attention mask and labels (caption tokens only)."""
        rows, labels = self._rows(embeddings, captions)
        width = max(len(r) for r in rows)
        inputs = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=inputs.device)
        target = torch.full((len(rows), width), -100, dtype=torch.long, device=inputs.device)
        for i, (r, lab) in enumerate(zip(rows, labels)):
            inputs[i, width - len(r) :] = r
            mask[i, width - len(r) :] = 1
            target[i, width - len(r) :] = lab
        return inputs, mask, target

    # -- training and generation -------------------------------------------------------------------

    def packs(self) -> bool:
        """Whether :meth:`loss` packs the batch: the LM's attention takes a 4-D mask (eager, SDPA) and
        its forward takes ``logits_to_keep`` (every causal LM of recent transformers)."""
        attention_ok = self.lm.config._attn_implementation in ("eager", "sdpa")
        return attention_ok and "logits_to_keep" in inspect.signature(self.lm.get_base_model().forward).parameters

    def loss(self, embeddings: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """Mean cross-entropy over the caption tokens of the batch.

        When :meth:`packs`, the clips are packed into one sequence, each token attending only to the
        earlier tokens of its own clip (a block-diagonal causal mask; positions restart per clip), and
        the vocabulary projection runs only where the next token is a caption token: the loss of the
        padded batch without computing the padding (a quarter of the demo's training tokens) or the
        prompt's logits. Otherwise (FlashAttention, flex attention) the batch is left-padded."""
        if not self.packs():
            inputs, mask, labels = self._inputs(embeddings, captions)
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            return self.lm(inputs_embeds=inputs, attention_mask=mask, labels=labels, position_ids=position_ids).loss
        rows, labels = self._rows(embeddings, captions)
        inputs, targets = torch.cat(rows)[None], torch.cat(labels)
        device = inputs.device
        clip = torch.cat([torch.full((len(r),), i, device=device) for i, r in enumerate(rows)])
        position_ids = torch.cat([torch.arange(len(r), device=device) for r in rows])[None]
        allowed = (clip[:, None] == clip[None, :]).tril()
        mask = torch.zeros(allowed.shape, dtype=inputs.dtype, device=device).masked_fill_(~allowed, torch.finfo(inputs.dtype).min)
        predict = (targets[1:] != -100).nonzero().squeeze(1)  # positions whose next token is a caption token
        logits = self.lm(inputs_embeds=inputs, attention_mask=mask[None, None], position_ids=position_ids, logits_to_keep=predict).logits[0]
        return F.cross_entropy(logits.float(), targets[predict + 1])

    @torch.no_grad()
    def generate(self, embeddings: torch.Tensor, options: DecodingOptions | None = None) -> list[str]:
        o = options or DecodingOptions()
        inputs, mask, _ = self._inputs(embeddings)
        out = self.lm.generate(
            inputs_embeds=inputs,
            attention_mask=mask,
            max_new_tokens=o.max_new_tokens,
            num_beams=o.num_beams,
            repetition_penalty=o.repetition_penalty,
            no_repeat_ngram_size=o.no_repeat_ngram_size,
            length_penalty=o.length_penalty,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        return [normalise(t) for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    # -- artifacts ---------------------------------------------------------------------------------

    def save_pretrained(self, folder: str | Path, extra: dict | None = None, merge: bool = False) -> Path:
        """``adapter/`` (peft's own save_pretrained) or, with ``merge``, ``merged/`` (the LM with the adapter
        merged in, and its tokenizer; this model's LM is merged in place, so it is used up), then
        ``projector.safetensors`` and ``config.json`` (the settings, the base LM's identity and ``extra``;
        the export format of :mod:`diffusion_link.export`)."""
        base = getattr(self, "meta", {}).get("base_lm") or lm_identity(self.config.llm)
        with write_export(folder, "captioner") as draft:
            if merge:
                self.lm.merge_and_unload().save_pretrained(draft.root / MERGED)
                self.tokenizer.save_pretrained(draft.root / MERGED)
            else:
                self.lm.save_pretrained(draft.root / ADAPTER)
            draft.save_tensors(PROJECTOR, self.projector.state_dict())
            draft.config.update({"config": asdict(self.config), **(extra or {}), "base_lm": base, "merged": merge})
        return Path(folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path, llm: str | None = None) -> "CaptionModel":
        """Load an export, after checking its kind and every file's checksum, peft's adapter files included
        (:func:`~diffusion_link.export.read_export`), and that the base LM (``llm``: another folder or name
        for it; default the one it was trained with) has the files it was trained with."""
        folder = Path(folder)
        meta = read_export(folder, "captioner", required=(PROJECTOR,))
        config = CaptionerConfig.from_dict(meta["config"])
        files = meta["files"]
        if meta.get("merged"):
            if not any(n.startswith(f"{MERGED}/") for n in files):
                raise ExportError(f"{folder}: a merged captioner export lists no {MERGED}/ files: the export is incomplete; make it again")
            model = cls(config, merged=folder / MERGED)
        else:
            for name in (f"{ADAPTER}/adapter_config.json", f"{ADAPTER}/adapter_model.safetensors"):
                if name not in files:
                    raise ExportError(f"{folder}/config.json does not list {name}, which a captioner export needs: the export is incomplete; make it again")
            config.llm = llm or config.llm
            if "base_lm" in meta:
                _check_base_lm(folder, meta["base_lm"], config.llm)
            model = cls(config, adapter=folder / ADAPTER)
        model.projector.load_state_dict(load_tensors(folder, PROJECTOR))
        model.meta = meta
        return model.eval()


def _check_base_lm(folder: Path, expected: dict, name: str) -> None:
    """Refuse a base LM whose files differ from those the captioner was trained with (the LoRA adapter and
    the projector mean nothing over another LM)."""
    found = lm_identity(name)
    if diff := identity_mismatch(expected, found):
        raise ExportError(
            f"{folder}: the captioner was trained on the base LM {expected.get('name')!r}, but the LM found for {name!r} "
            f"({found['folder']}) is a different one: "
            + "; ".join(diff[:5])
            + (f" (and {len(diff) - 5} more)" if len(diff) > 5 else "")
            + ". Give the LM it was trained with (a local folder holding those files), or train the captioner on this one."
        )
