"""Device-mapped (accelerate-dispatched) models score exactly like one-device models; placement errors are clear.

On a CPU-only machine ``device_map="auto"`` puts everything on the CPU, so these tests force offloading with explicit
maps (decoder layers and the LM head on ``disk``: their weights sit on ``meta`` between forward passes) and with
``auto`` under a small ``max_memory`` (accelerate then spills the rest to disk). The references are the same
checkpoints loaded whole on the CPU.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from drift.collect.config import CollectConfig, ScoreConfig, ScoringOptions, parse_device_map, parse_max_memory
from drift.collect.scoring import LMHead, ScoringItem, score_items
from drift.errors import ConfigError, DeviceError, ModelLoadError
from drift.models import load_model, model_identity
from drift.runtime.loading import load_pair
from tests.helpers import TINY_VOCAB, make_tiny_model, make_tiny_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")

ATOL = 1e-5  # as in test_scoring; on one CPU the offloaded runs are in fact bitwise equal
LAYERS = 4
# layers 1-2 and the LM head offloaded to disk; embeddings, layers 0 and 3 and the norm stay in RAM
DISK_MAP = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "disk",
            "model.layers.3": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "disk"}
# a tied model: the head shares the embeddings' weight, so both go to disk together
TIED_MAP = {**DISK_MAP, "model.embed_tokens": "disk", "model.layers.2": "cpu"}


def _save(model, folder: Path) -> str:
    model.save_pretrained(folder)
    make_tiny_tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, str]:
    """Saved tiny Llamas: a tied student, an untied teacher (separate LM head), a tied teacher."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("ckpt")
    untied_cfg = make_tiny_model(1, layers=LAYERS).config
    untied_cfg.tie_word_embeddings = False
    torch.manual_seed(1)
    untied = AutoModelForCausalLM.from_config(untied_cfg).eval()
    return {"student": _save(make_tiny_model(0, layers=LAYERS), root / "student"),
            "teacher": _save(untied, root / "teacher"),
            "tied_teacher": _save(make_tiny_model(2, layers=LAYERS), root / "tied_teacher")}


def _items(rng: np.random.Generator, n: int = 9) -> list[ScoringItem]:
    out = []
    for _ in range(n):
        sp = [1, *rng.integers(7, TINY_VOCAB, rng.integers(1, 6)).tolist()]
        tp = [1, *rng.integers(7, TINY_VOCAB, rng.integers(1, 12)).tolist()]
        resp = rng.integers(2, TINY_VOCAB, rng.integers(1, 25)).tolist()
        out.append(ScoringItem(sp, tp, resp))
    out.append(ScoringItem([1, 9], [1, 9], []))  # an empty response in the mix
    return out


def _assert_same_scores(got: list[dict[str, np.ndarray]], want: list[dict[str, np.ndarray]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        for key in w:
            if np.issubdtype(np.asarray(w[key]).dtype, np.integer):
                np.testing.assert_array_equal(g[key], w[key], err_msg=key)
            else:
                np.testing.assert_allclose(np.asarray(g[key], float), np.asarray(w[key], float), atol=ATOL, rtol=0,
                                           err_msg=key)


def _is_offloaded(model, name: str) -> bool:
    return model.get_submodule(name).weight.device.type == "meta"


@pytest.mark.parametrize("which", ["teacher", "tied_teacher"])
@pytest.mark.parametrize(("chunk_size", "vocab_chunk", "max_batch_tokens"), [(3, 17, 40), (64, 4096, 100_000)])
def test_disk_offloaded_teacher_scores_equal_one_device(ckpts, rng, tmp_path, which, chunk_size, vocab_chunk,
                                                        max_batch_tokens):
    dmap = DISK_MAP if which == "teacher" else TIED_MAP
    student = load_model(ckpts["student"], device="cpu")
    whole = load_model(ckpts[which], device="cpu")
    mapped = load_model(ckpts[which], device_map=dmap, offload_folder=tmp_path / "off")
    assert _is_offloaded(mapped, "lm_head") and _is_offloaded(mapped, "model.layers.1.self_attn.q_proj")
    items = _items(rng)
    kw = dict(chunk_size=chunk_size, vocab_chunk=vocab_chunk, max_batch_tokens=max_batch_tokens)
    want = score_items(student, whole, items, **kw)
    got = score_items(student, mapped, items, **kw)
    _assert_same_scores(got, want)
    assert _is_offloaded(mapped, "lm_head"), "the head's weight must go back to meta after scoring"
    # both models dispatched, the student's head offloaded too
    got2 = score_items(mapped, load_model(ckpts["student"], device_map={**TIED_MAP, "model.layers.0": "disk"}),
                       items, **kw)
    _assert_same_scores(got2, score_items(whole, student, items, **kw))


def test_auto_map_under_max_memory_spills_to_disk_and_scores_equal(ckpts, rng):
    mapped = load_model(ckpts["teacher"], device_map="auto", max_memory="cpu=60KB")
    assert "disk" in set(mapped.hf_device_map.values()), mapped.hf_device_map
    student = load_model(ckpts["student"], device="cpu")
    items = _items(rng)
    _assert_same_scores(score_items(student, mapped, items, chunk_size=5, vocab_chunk=33),
                        score_items(student, load_model(ckpts["teacher"], device="cpu"), items, chunk_size=5,
                                    vocab_chunk=33))
    ident = model_identity(mapped)
    assert ident["device"] == "cpu" and ident["device_map"] == mapped.hf_device_map
    assert ident["vocab_size"] == TINY_VOCAB


def test_offloaded_head_is_onloaded_once_per_block_and_released(ckpts):
    lm = LMHead(load_model(ckpts["teacher"], device_map=DISK_MAP))
    assert lm.device == torch.device("cpu") and lm.input_device == torch.device("cpu")
    assert lm.head.weight.device.type == "meta"
    h = torch.randn(4, lm.head.in_features)
    with lm.onloaded():
        assert lm.head.weight.device.type == "cpu"
        w = lm.head.weight
        with lm.onloaded():  # nested: the same tensor, no second load
            assert lm.head.weight is w
        assert lm.head.weight is w
        inside = lm.logits(h)
    assert lm.head.weight.device.type == "meta"
    outside = lm.logits(h)  # one call onloads and releases by itself
    assert lm.head.weight.device.type == "meta"
    torch.testing.assert_close(inside, outside, rtol=0, atol=0)
    assert lm.check_parity([1, 8, 9, 10]) < 1e-5


def _rollouts_jsonl(path: Path, rng: np.random.Generator) -> Path:
    lines = []
    for i in range(6):
        prompt = [1, *rng.integers(7, TINY_VOCAB, rng.integers(1, 5)).tolist()]
        resp = [*rng.integers(7, TINY_VOCAB, rng.integers(1, 12)).tolist(), 2]
        lines.append({"prompt_id": f"p{i % 3}", "prompt_ids": prompt, "response_ids": resp,
                      "teacher_prompt_ids": [1, 9, *prompt[1:]]})
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _tokens(ds):
    return ds.to_pandas("tokens").sort_values(["prompt_id", "sample_id", "position"]).reset_index(drop=True)


def _assert_same_tables(a, b) -> None:
    assert len(a) == len(b) and list(a.columns) == list(b.columns)
    for col in a.columns:
        if a[col].dtype.kind in "fc":
            np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), atol=ATOL, rtol=0,
                                       err_msg=col)
        elif a[col].dtype.kind in "iub":
            np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy(), err_msg=col)


def test_score_run_with_a_disk_offloaded_teacher_equals_one_device(ckpts, rng, tmp_path):
    """A whole ``drift score`` run (pair check, self-check, writer) through load_pair with a teacher device map."""
    from drift.collect.inputs import read_rollouts
    from drift.collect.pipeline import score

    src = _rollouts_jsonl(tmp_path / "r.jsonl", rng)
    map_file = tmp_path / "teacher_map.json"
    map_file.write_text(json.dumps(DISK_MAP))
    runs = {}
    for name, opts in {"whole": ScoringOptions(progress=False, device="cpu"),
                       "mapped": ScoringOptions(progress=False, teacher_device_map=str(map_file),
                                                offload_folder=str(tmp_path / "off"), self_check=True)}.items():
        cfg = ScoreConfig(rollouts=str(src), out=str(tmp_path / name), student=ckpts["student"],
                          teacher=ckpts["teacher"], part_size=4, scoring=opts)
        maps = cfg.scoring.device_maps()
        mp = load_pair(cfg.student, cfg.teacher, device=opts.device, student_device_map=maps["student"],
                       teacher_device_map=maps["teacher"], max_memory=opts.max_memory,
                       offload_folder=opts.offload_folder)
        assert (getattr(mp.teacher, "hf_device_map", None) is not None) == (name == "mapped")
        rows = read_rollouts(src, mp.tokenizer, stop_ids=[2])
        runs[name] = score(mp.student, mp.teacher, mp.tokenizer, rows, cfg)
    assert runs["mapped"].manifest["self_check"]["self_max_kl"] < 1e-6
    _assert_same_tables(_tokens(runs["mapped"]), _tokens(runs["whole"]))


def test_collect_run_samples_and_scores_with_mapped_models(ckpts, tmp_path):
    """Sampling goes through the dispatched student's hooks: same rollouts and scores as one device."""
    from drift.collect.pipeline import collect
    from drift.collect.prompts import PromptRecord

    prompts = [PromptRecord(id=f"p{i}", prompt=" ".join(f"w{(5 * i + j) % 90}" for j in range(2 + i % 3)))
               for i in range(4)]
    # the student is tied: embeddings and head together, in RAM (sampling feeds the embeddings' device)
    student_map = {**DISK_MAP, "model.layers.3": "disk", "lm_head": "cpu"}
    runs = {}
    for name, maps in {"whole": (None, None), "mapped": (student_map, TIED_MAP)}.items():
        opts = ScoringOptions(progress=False, chunk_size=4, vocab_chunk=29)
        mp = load_pair(ckpts["student"], ckpts["tied_teacher"], student_device_map=maps[0],
                       teacher_device_map=maps[1])
        cfg = CollectConfig(out=str(tmp_path / name), student="s", teacher="t", prompts="p.jsonl",
                            samples_per_prompt=2, max_new_tokens=8, part_size=4, seed=5, scoring=opts)
        runs[name] = collect(mp.student, mp.teacher, mp.tokenizer, prompts, cfg)
    a, b = (runs[k].to_pandas("rollouts").sort_values(["prompt_id", "sample_id"]) for k in ("mapped", "whole"))
    assert [list(x) for x in a.response_ids] == [list(x) for x in b.response_ids]
    _assert_same_tables(_tokens(runs["mapped"]), _tokens(runs["whole"]))


def test_max_memory_caps_the_computed_map_only(ckpts):
    opts = ScoringOptions(teacher_device_map=json.dumps(DISK_MAP), student_device_map="auto", max_memory="cpu=60KB")
    mp = load_pair(ckpts["student"], ckpts["teacher"], **opts.placement())
    assert "disk" in mp.student.hf_device_map.values() and mp.teacher.hf_device_map == DISK_MAP


def test_load_pair_shares_a_self_teacher_only_with_the_same_placement(ckpts):
    same = load_pair(ckpts["student"], ckpts["student"], student_device_map=TIED_MAP, teacher_device_map=TIED_MAP)
    assert same.teacher is same.student
    split = load_pair(ckpts["student"], ckpts["student"], teacher_device_map=TIED_MAP)
    assert split.teacher is not split.student and getattr(split.student, "hf_device_map", None) is None


def test_offload_folder_gets_one_subfolder_per_model_when_weights_are_resaved(ckpts, tmp_path):
    """A .bin checkpoint cannot be read in place: without --offload-folder the error says so; with it each model
    re-saves into its own subfolder (two models in one folder would overwrite each other's files)."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "bin"
    model = AutoModelForCausalLM.from_pretrained(ckpts["teacher"])
    model.config.save_pretrained(folder)
    make_tiny_tokenizer().save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="--offload-folder"):
        load_model(folder, device_map=DISK_MAP)
    mp = load_pair(str(folder), str(folder), student_device_map=DISK_MAP, teacher_device_map=DISK_MAP,
                   offload_folder=str(tmp_path / "off"), share=False)
    for name in ("student", "teacher"):
        assert (tmp_path / "off" / name / "lm_head.weight.safetensors").exists()
    items = _items(np.random.default_rng(0), 4)
    _assert_same_scores(score_items(mp.student, mp.teacher, items),
                        score_items(load_model(folder, device="cpu"), load_model(folder, device="cpu"), items))


# ------------------------------------------------------------------ parsing and validation (no weights loaded)

def test_device_map_forms_parse():
    assert parse_device_map(None) is None and parse_device_map("  ") is None
    assert parse_device_map("auto") == "auto" and parse_device_map("balanced_low_0") == "balanced_low_0"
    assert parse_device_map("cpu") == {"": "cpu"} and parse_device_map("cuda:1") == {"": 1}
    assert parse_device_map("cuda") == {"": 0} and parse_device_map("2") == {"": 2}
    assert parse_device_map('{"model": "cuda:1", "lm_head": "DISK", "x": 0}') == {"model": 1, "lm_head": "disk",
                                                                                    "x": 0}
    assert parse_device_map({"model": torch.device("cpu")}) == {"model": "cpu"}
    assert parse_max_memory("0=70GiB, cuda:1=1.5GB,cpu=200") == {0: 70 * 2**30, 1: 1_500_000_000, "cpu": 200}
    assert parse_max_memory({0: "1KiB", "cpu": 5}) == {0: 1024, "cpu": 5}


@pytest.mark.parametrize(("value", "match"), [
    ("tpu", "'tpu' is not a device"), ('{"model": "meta"}', "meta holds no weights"), ("{model: 0}", "not valid JSON"),
    ("{}", "non-empty object"), ("missing.json", "no such file"), ('{"model": -1}', "negative"),
])
def test_bad_device_maps_are_config_errors(value, match):
    with pytest.raises(ConfigError, match=match):
        ScoringOptions(teacher_device_map=value)


def test_device_other_than_auto_with_a_map_names_the_fix():
    with pytest.raises(ConfigError, match=r"--device cpu cannot be combined with --teacher-device-map.*"
                                          r"--student-device-map cpu"):
        ScoringOptions(device="cpu", teacher_device_map="auto")
    with pytest.raises(ConfigError, match="both models are placed by their maps"):
        ScoringOptions(device="cuda:0", teacher_device_map="auto", student_device_map="auto")
    with pytest.raises(DeviceError, match="Leave --device at auto"):
        load_pair("s", "t", device="cpu", teacher_device_map="auto")
    with pytest.raises(DeviceError, match="Leave device at 'auto'"):
        load_model("x", device="cpu", device_map="auto")


def test_max_memory_and_offload_folder_need_a_map():
    with pytest.raises(ConfigError) as err:
        ScoringOptions(max_memory="cpu=1GB", offload_folder="/tmp/x")
    assert len(err.value.problems) == 2 and "add --teacher-device-map auto" in err.value.problems[0]
    with pytest.raises(ConfigError, match="is not a size"):
        ScoringOptions(teacher_device_map="auto", max_memory="0=lots")
    with pytest.raises(DeviceError, match="apply only to device-mapped models"):
        load_pair("s", "t", max_memory="cpu=1GB")
    with pytest.raises(ConfigError, match=r"explicit .* map places every module itself"):
        ScoringOptions(teacher_device_map='{"": "cpu"}', max_memory="cpu=1GB")
    with pytest.raises(DeviceError, match=r"explicit .* map places every module itself"):
        load_model("x", device_map={"": "cpu"}, max_memory="cpu=1GB")
    opts = ScoringOptions(teacher_device_map='{"": "cpu"}', student_device_map="auto", max_memory="cpu=1GB")
    assert opts.model_placement("teacher")["max_memory"] is None  # caps only the map accelerate computes
    assert opts.model_placement("student")["max_memory"] == "cpu=1GB"


def test_maps_checked_against_the_model_before_weights_are_read(ckpts, monkeypatch):
    import transformers

    def no_weights(*a, **k):
        raise AssertionError("weights were read before the device map was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    with pytest.raises(ModelLoadError, match=r"names model\.layerz, which is not a module.*lm_head"):
        load_model(ckpts["teacher"], device_map={**DISK_MAP, "model.layerz": "cpu"})
    with pytest.raises(ModelLoadError, match=r"gives no device to model\.layers\.3"):
        load_model(ckpts["teacher"], device_map={k: v for k, v in DISK_MAP.items() if k != "model.layers.3"})
    with pytest.raises(ModelLoadError, match=r"lm_head on 'disk' but model\.embed_tokens on 'cpu'.*tied to.*same"):
        load_model(ckpts["tied_teacher"], device_map=DISK_MAP)  # a tied head split from its embeddings
    # load_pair checks the teacher's map before loading the student
    with pytest.raises(ModelLoadError, match="gives no device"):
        load_pair(ckpts["student"], ckpts["teacher"], teacher_device_map={"model": "cpu"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_gpu_in_a_map_without_cuda_is_a_device_error(ckpts):
    with pytest.raises(DeviceError, match=r"names GPU 1 .* no CUDA device"):
        load_model(ckpts["teacher"], device_map={"": "cuda:1"})
    with pytest.raises(DeviceError, match=r"max_memory \(--max-memory\) names GPU 0"):
        load_model(ckpts["teacher"], device_map="auto", max_memory="0=1GiB,cpu=1GiB")


def test_device_maps_are_refused_under_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DeviceError, match="under torchrun each rank"):
        load_pair("s", "t", teacher_device_map="auto")


def test_flags_are_generated_for_every_command_sharing_scoring_options():
    import argparse

    from drift.config import add_config_arguments, config_from_namespace

    for cls in (CollectConfig, ScoreConfig):
        parser = argparse.ArgumentParser()
        add_config_arguments(parser, cls)
        ns = parser.parse_args(["--out", "o", "--student", "s", "--teacher", "t", "--rollouts", "r",
                                "--teacher-device-map", "auto", "--student-device-map", "cuda:0",
                                "--max-memory", "0=70GiB,cpu=200GiB", "--offload-folder", "/scratch/off"]
                               if cls is ScoreConfig else
                               ["--out", "o", "--student", "s", "--teacher", "t", "--prompts", "p",
                                "--teacher-device-map", "auto"])
        cfg = config_from_namespace(cls, ns)
        assert cfg.scoring.teacher_device_map == "auto"
        help_text = parser.format_help()
        assert all(t in help_text for t in ("--teacher-device-map", "parameters x 2 bytes", "--offload-folder"))
    assert cfg.scoring.device_maps() == {"student": {"": 0}, "teacher": "auto"}
    assert cfg.scoring.max_memory == "0=70GiB,cpu=200GiB"
    assert dataclasses.replace(cfg.scoring, teacher_device_map=None, student_device_map=None, max_memory=None,
                               offload_folder=None).device_maps() == {"student": None, "teacher": None}


# ------------------------------------------------------------------ on a CUDA machine

@pytest.mark.gpu
def test_cuda_with_cpu_offloaded_layers_and_head_equals_one_gpu(ckpts, rng):
    """Main device cuda:0, layers 1-2 and the head offloaded to CPU RAM (weights copied in per forward)."""
    cpu_off = {k: (0 if v == "cpu" else "cpu") for k, v in DISK_MAP.items()}
    student = load_model(ckpts["student"], device="cuda", dtype="float32")
    mapped = load_model(ckpts["teacher"], device_map=cpu_off, dtype="float32")
    assert _is_offloaded(mapped, "lm_head") and LMHead(mapped).device == torch.device("cuda", 0)
    whole = load_model(ckpts["teacher"], device="cuda", dtype="float32")
    items = _items(rng)
    _assert_same_scores(score_items(student, mapped, items, chunk_size=5, vocab_chunk=33),
                        score_items(student, whole, items, chunk_size=5, vocab_chunk=33))


@pytest.mark.gpu
def test_student_on_cpu_teacher_on_cuda_equals_all_cpu(ckpts, rng):
    """Cross-device scoring: the teacher's tiles are computed on its GPU and copied into the student's buffers."""
    mp = load_pair(ckpts["student"], ckpts["teacher"], dtype="float32", student_device_map="cpu",
                   teacher_device_map={**DISK_MAP, **{k: 0 for k in DISK_MAP if k != "lm_head"}, "lm_head": "cpu"})
    assert LMHead(mp.student).device.type == "cpu" and LMHead(mp.teacher).device == torch.device("cuda", 0)
    items = _items(rng)
    want = score_items(load_model(ckpts["student"], device="cpu"), load_model(ckpts["teacher"], device="cpu"), items,
                       chunk_size=4, vocab_chunk=40)
    got = score_items(mp.student, mp.teacher, items, chunk_size=4, vocab_chunk=40)
    for g, w in zip(got, want, strict=True):  # CPU vs CUDA kernels: float tolerance, ranks at most near-ties apart
        for key in ("student_logprob", "teacher_logprob", "kl_reverse", "kl_forward", "teacher_entropy"):
            np.testing.assert_allclose(g[key], w[key], atol=1e-4, rtol=0, err_msg=key)
        assert np.abs(g["teacher_rank"] - w["teacher_rank"]).max(initial=0) <= 1


def test_training_against_a_disk_offloaded_teacher_equals_one_device(ckpts):
    """``drift train --teacher-device-map``: the trainer's teacher passes (LMHead.logits per call) see the same
    numbers, so the logged run is the same."""
    from drift.collect.prompts import PromptRecord
    from drift.models import load_tokenizer
    from drift.train import TrainConfig, train

    prompts = [PromptRecord(id=f"t{i}", prompt=f"w{i} w{i + 1} w{i + 2}", answer=f"w{i + 3}") for i in range(6)]
    cfg = TrainConfig(student="s", teacher="t", prompts="p", heldout_prompts="h", out="", collect_at=(), steps=2,
                      prompts_per_step=2, samples_per_prompt=2, max_new_tokens=6, eval_prompts=2, eval_samples=1,
                      lr=1e-2, loss="full_kl", scoring=ScoringOptions(progress=False))
    tok = load_tokenizer(ckpts["student"])
    teachers = (load_model(ckpts["teacher"], device="cpu"), load_model(ckpts["teacher"], device_map=DISK_MAP))
    runs = [train(load_model(ckpts["student"], device="cpu"), teacher, tok, prompts[:4], prompts[4:], None, cfg).metrics
            for teacher in teachers]
    cols = [c for c in runs[0].columns if runs[0][c].dtype.kind == "f" and not c.startswith("time")]
    np.testing.assert_allclose(runs[1][cols].to_numpy(), runs[0][cols].to_numpy(), atol=ATOL, rtol=0)
