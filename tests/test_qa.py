"""Extractive QA: SQuAD reading, windows over long contexts, span decoding, EM/F1, training."""

import json

import numpy as np
import pytest

from jaxft import config as config_lib
from jaxft.data import squad
from jaxft.errors import UserError
from jaxft.metrics import squad as metrics
from jaxft.train import inference, loop, qa
from tests.conftest import needs_torch

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]


def _article(i: int, unanswerable: bool = False) -> dict:
    """A context of several facts (long enough to need several windows at max_length 48)."""
    people = [NAMES[(i + k) % 8] for k in range(6)]
    facts = [f"{p} likes the color {COLORS[(i + 3 * k) % 8]} a lot ." for k, p in enumerate(people)]
    context = " ".join(facts)
    qas = []
    for k, p in enumerate(people):
        answer = f"{COLORS[(i + 3 * k) % 8]}"
        start = context.index(f"{p} likes the color ") + len(f"{p} likes the color ")
        qas.append(
            {
                "id": f"q{i}-{k}",
                "question": f"which color does {p} like ?",
                "answers": [{"text": answer, "answer_start": start}],
            }
        )
    if unanswerable:
        qas.append(
            {
                "id": f"q{i}-none",
                "question": "which color does zed like ?",
                "answers": [],
                "is_impossible": True,
            }
        )
    return {"title": f"t{i}", "paragraphs": [{"context": context, "qas": qas}]}


def _write(path, articles, version="1.1"):
    path.write_text(json.dumps({"version": version, "data": articles}))
    return path


def _treasure(i: int) -> dict:
    """One fact to find among filler facts: a pattern a tiny model learns in a few epochs."""
    rng = np.random.default_rng(i)
    facts = [f"{NAMES[k]} likes the color {COLORS[(k + i) % 8]} ." for k in rng.permutation(8)[:4]]
    color = COLORS[int(rng.integers(8))]
    facts.insert(int(rng.integers(5)), f"the treasure is in the {color} box .")
    context = " ".join(facts)
    start = context.index("the treasure is in the ") + len("the treasure is in the ")
    qas = [
        {
            "id": f"t{i}",
            "question": "where is the treasure ?",
            "answers": [{"text": color, "answer_start": start}],
        }
    ]
    return {"title": f"t{i}", "paragraphs": [{"context": context, "qas": qas}]}


@pytest.fixture(scope="module")
def squad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("squad")
    return {
        "train": _write(folder / "train.json", [_treasure(i) for i in range(320)]),
        "validation": _write(folder / "dev.json", [_treasure(i) for i in range(320, 384)]),
    }


def _config(model_dir, files, **overrides):
    c = config_lib.defaults()
    c.model = str(model_dir)
    c.task.kind = "question_answering"
    c.data.source = "squad"
    c.data.files.train, c.data.files.validation = str(files["train"]), str(files["validation"])
    c.data.files.test = ""
    c.data.max_length = 48
    c.data.buckets = (48,)
    c.task.doc_stride = 16
    c.train.eval_splits = ("validation",)
    c.train.progress = False
    for key, value in overrides.items():
        config_lib.apply_overrides(c, [(key, repr(value) if not isinstance(value, str) else value)])
    return c


def test_official_normalisation_and_scores_by_hand():
    assert metrics.normalize("The  Eiffel-Tower!") == "eiffeltower"
    assert metrics.normalize("an apple and a pear") == "apple and pear"
    assert metrics.exact("The Beatles", "beatles") == 1.0
    # pred tokens {big, red, dog}, gold {red, dog}: precision 2/3, recall 1 -> F1 0.8.
    assert metrics.f1("big red dog", "the red dog") == pytest.approx(0.8)
    gold = {"a": ["red dog", "dog"], "b": ["cat"], "c": []}
    predictions = {"a": "the dog", "b": "a black cat", "c": ""}
    out = metrics.scores(predictions, gold)
    # a: EM 1 (vs "dog"); b: EM 0, F1 = 2*(1/2*1)/(1/2+1) = 2/3; c (no answer, ""): 1 and 1.
    assert out["exact_match"] == pytest.approx(100 * 2 / 3)
    assert out["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 3)
    assert out["has_ans_exact"] == pytest.approx(50.0)
    assert out["no_ans_f1"] == pytest.approx(100.0)
    assert metrics.scores({"c": "something"}, {"c": []})["exact_match"] == 0.0
    assert metrics.scores({}, {"a": ["x"]})["f1"] == 0.0  # unanswered counts 0
    assert set(metrics.scores({"a": "x"}, {"a": ["x"]})) == {"exact_match", "f1"}


def test_an_answer_that_does_not_match_its_context_names_the_question(tmp_path):
    article = _article(0)
    article["paragraphs"][0]["qas"][2]["answers"][0]["answer_start"] += 1
    path = _write(tmp_path / "bad.json", [article])
    with pytest.raises(UserError, match=r"bad.json, question q0-2: answers\[0\].answer_start="):
        squad.read(path)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(UserError, match="expected SQuAD's layout"):
        squad.read(tmp_path / "list.json")


def test_unanswerable_questions_need_squad_v2(tmp_path):
    splits = {"train": squad.read(_write(tmp_path / "v2.json", [_article(0, True)], "v2.0"))}
    assert splits["train"].unanswerable == 1
    with pytest.raises(UserError, match="1 unanswerable questions .* set task.squad_v2=true"):
        qa.check_version(splits, squad_v2=False)
    qa.check_version(splits, squad_v2=True)


def _gold_logits(windows):
    """Span logits that put all their mass on each window's gold (start, end) label."""
    out = []
    for w, ids in enumerate(windows.encoded.input_ids):
        starts, ends = np.zeros(len(ids)), np.zeros(len(ids))
        s, e = windows.encoded.labels[w]
        starts[s], ends[e] = 10.0, 10.0
        out.append((starts, ends))
    return out


@pytest.mark.parametrize("squad_v2", [False, True])
def test_decoding_gold_logits_recovers_every_gold_answer(minilm_dir, tmp_path, squad_v2):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    articles = [_article(i, unanswerable=squad_v2) for i in range(6)]
    questions = squad.read(_write(tmp_path / "f.json", articles))
    config = _config(minilm_dir, {"train": "", "validation": ""}, **{"task.squad_v2": squad_v2})
    windows = qa.make_windows(tokenizer, questions, config)
    per_question = np.bincount(windows.question)
    assert per_question.min() >= 2  # every context spans several windows
    # Some answer is cut by a window edge: that window labels [CLS], a neighbour holds it.
    cut = [w for w in range(len(windows.question)) if tuple(windows.encoded.labels[w]) == (0, 0)]
    assert cut
    answers = qa.decode(windows, _gold_logits(windows), questions.contexts, config.task)
    for got, gold, context in zip(answers, questions.answers, questions.contexts, strict=True):
        if gold:
            assert got["answer"] == gold[0][0]
            assert context[got["start"] : got["end"]] == gold[0][0]
        else:
            assert got["answer"] == "" and got["start"] == -1


def test_a_boundary_crossing_answer_is_labelled_only_where_it_fits(minilm_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    questions = squad.read(_write(tmp_path / "f.json", [_article(3)]))
    config = _config(minilm_dir, {"train": "", "validation": ""})
    windows = qa.make_windows(tokenizer, questions, config)
    for q, (text, start) in enumerate(a[0] for a in questions.answers):
        inside = []
        for w in np.flatnonzero(windows.question == q):
            offsets = windows.offsets[w]
            spans = [o for o in offsets if o is not None]
            holds = spans[0][0] <= start and spans[-1][1] >= start + len(text)
            s, e = windows.encoded.labels[w]
            assert (s, e) != (0, 0) if holds else (s, e) == (0, 0)
            if holds:
                inside.append(w)
                assert questions.contexts[q][offsets[s][0] : offsets[e][1]] == text
        assert inside  # stride 16 > any answer: every answer fits whole in some window


@needs_torch
def test_span_head_matches_hf_question_answering(tiny_model_dir, tmp_path):
    import torch
    import transformers

    from jaxft import models

    torch.manual_seed(0)
    hf = transformers.BertForQuestionAnswering.from_pretrained(str(tiny_model_dir))
    hf.save_pretrained(tmp_path)
    model, params = models.from_pretrained(tmp_path, head="question_answering", num_labels=2)
    ids = np.random.default_rng(0).integers(100, 2000, (2, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 9:] = 0
    ours = np.asarray(model.apply({"params": params}, ids, attention_mask=mask).logits)
    with torch.no_grad():
        out = hf.eval()(torch.tensor(ids), attention_mask=torch.tensor(mask))
    np.testing.assert_allclose(
        ours[..., 0][mask == 1], out.start_logits.numpy()[mask == 1], atol=1e-4
    )
    np.testing.assert_allclose(
        ours[..., 1][mask == 1], out.end_logits.numpy()[mask == 1], atol=1e-4
    )


@needs_torch
def test_qa_training_learns_and_predicts_spans(tiny_model_dir, squad_files, tmp_path):
    from jaxft.train.writer import read_metrics

    config = _config(tiny_model_dir, squad_files, **{"optim.lr": 3e-3, "train.epochs": 2})
    config.train.batch_size = 32
    config.train.eval_before = True
    results = loop.train_and_evaluate(config, tmp_path)
    validation = [r for r in read_metrics(tmp_path) if r["split"] == "validation"]
    assert validation[-1]["f1"] > validation[0]["f1"] + 20, validation
    assert results["validation"]["f1"] > 50, results
    context = "bob likes the color red . the treasure is in the green box . carol likes it ."
    (row,) = inference.predict(tmp_path, ["where is the treasure ?"], [context])
    assert set(row) == {"question", "answer", "start", "end", "score"}
    assert row["answer"] and context[row["start"] : row["end"]] == row["answer"]
    with pytest.raises(UserError, match="give --input FILE.jsonl with 'text' .* 'text_pair'"):
        inference.predict(tmp_path, ["which color ?"], None)

    # The export is a BertForQuestionAnswering with the same start/end logits.
    import torch
    import transformers

    out = inference.export(tmp_path, "hf", tmp_path / "hf")
    hf = transformers.AutoModelForQuestionAnswering.from_pretrained(str(out)).eval()
    assert type(hf).__name__ == "BertForQuestionAnswering"
    _, model, params, tokenizer = inference.load_workdir(tmp_path)
    enc = tokenizer(["where is the treasure ?"], [context], return_tensors="np")
    ours = np.asarray(model.apply({"params": params}, **enc).logits)
    with torch.no_grad():
        theirs = hf(**{k: torch.tensor(v) for k, v in enc.items()})
    np.testing.assert_allclose(ours[..., 0], theirs.start_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(ours[..., 1], theirs.end_logits.numpy(), atol=1e-4)


@needs_torch
def test_the_squad_experiment_runs_from_the_command_line(tiny_model_dir, squad_files, tmp_path):
    import subprocess
    import sys

    command = [sys.executable, "-m", "jaxft", "train", "experiments/squad.py"]
    command += ["--workdir", str(tmp_path), f"--config.model={tiny_model_dir}"]
    command += [f"--config.data.files.{s}={p}" for s, p in squad_files.items()]
    command += ["--config.train.max_steps=3", "--config.train.progress=false"]
    command += [
        "--config.data.max_length=48",
        "--config.data.buckets=48",
        "--config.task.doc_stride=16",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "validation: exact_match=" in done.stdout
    assert set(json.loads((tmp_path / "eval.json").read_text())) == {"validation"}
