"""The translation command line, end to end on tiny runs.

``python -m tinylm.train --task translate`` writes a run folder of its own kind (two
tokenizers, the translation columns in metrics.csv); ``python -m tinylm.translate``
prints one translation per source; ``python -m tinylm.evaluate`` scores BLEU and exact
match that equal what ``tinylm.bleu`` makes of the translations printed; and every
mistake a user can make is one line and exit status 2, before any work.
"""

import csv
import io
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from tinylm import cli, evaluate, generate, train, translate
from tinylm.bleu import corpus_bleu, exact_match
from tinylm.parallel_corpus import tsv_corpus
from tinylm.tasks import load_parallel_corpus
from tinylm.tokenizers import tokenizer_from_json

ENGLISH = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
GERMAN = ("eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn")
TINY = ["--hidden-dim", "32", "--embedding-dim", "16", "--batch-size", "16", "--steps", "6", "--eval-every", "3",
        "--log-every", "1"]
TRANSFORMER = ["--model", "seq2seq-transformer", "--d-model", "16", "--n-heads", "2", "--n-layers", "1",
               "--dim-feedforward", "32"]
TRANSLATION_COLUMNS = ["step", "tokens", "elapsed_s", "lr", "train_loss", "val_loss", "val_bleu", "val_exact_match",
                       "tokens_per_s"]


def word_pairs():
    """English number words and their German ones, word for word: every one- and two-word
    sentence and 90 of the three-word ones (200 distinct sources, of 1 to 3 words)."""
    sentences = [(i,) for i in range(10)] + list(itertools.product(range(10), repeat=2))
    triples = list(itertools.product(range(10), repeat=3))
    sentences += [triples[i] for i in np.random.default_rng(0).choice(len(triples), 90, replace=False)]
    return [(" ".join(ENGLISH[i] for i in s), " ".join(GERMAN[i] for i in s)) for s in sentences]


@pytest.fixture(scope="module")
def tsv(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "numbers.tsv"
    path.write_text("".join(f"{source}\t{target}\n" for source, target in word_pairs()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory, tsv):
    """A seq2seq-lstm run on the TSV (word source tokens, character target tokens: a target
    can hold no newline, so every translation is one printed line)."""
    run = tmp_path_factory.mktemp("lstm") / "run"
    train.main(["--task", "translate", "--data", str(tsv), "--target-tokenizer", "char", *TINY,
                "--backend", "cython", "--out", str(run)])
    return run


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory):
    """A seq2seq-transformer run on the built-in numbers corpus (English to German)."""
    pytest.importorskip("num2words", reason="the built-in corpora come with pip install 'tinylm[translate]'")
    run = tmp_path_factory.mktemp("transformer") / "run"
    train.main(["--task", "translate", "--corpus", "numbers", "--pair", "en-de", "--target-tokenizer", "char",
                *TINY, *TRANSFORMER, "--backend", "numpy", "--out", str(run)])
    return run


@pytest.fixture(scope="module")
def language_model_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("language-model")
    (folder / "text.txt").write_text("the quick brown fox jumps over the lazy dog. " * 20, encoding="utf-8")
    run = folder / "run"
    train.main(["--data", str(folder / "text.txt"), "--model", "lstm", "--embedding-dim", "8", "--hidden-dim", "16",
                "--n-layers", "1", "--batch-size", "4", "--seq-len", "8", "--steps", "2", "--eval-every", "2",
                "--sample-tokens", "0", "--out", str(run)])
    return run


@pytest.fixture(params=["lstm on a TSV", "transformer on numbers"])
def run(request):
    return request.getfixturevalue("lstm_run" if request.param == "lstm on a TSV" else "transformer_run")


def metrics(run):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.reader(f))


def translate_lines(run, sources, tmp_path, *flags):
    """What ``python -m tinylm.translate --input`` prints for ``sources``, as lines."""
    path = tmp_path / "sources.txt"
    path.write_text("\n".join(sources) + "\n", encoding="utf-8")
    out = io.StringIO()
    translate.main(["--checkpoint", str(run), "--input", str(path), *flags], out=out)
    return out.getvalue().splitlines()


# ---- the run folder


def test_a_translation_run_folder_holds_two_tokenizers_and_the_translation_metrics(run):
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "translate"
    assert config["model"] in ("seq2seq-lstm", "seq2seq-transformer")
    for side in ("source", "target"):
        tokenizer = tokenizer_from_json((run / f"{side}_tokenizer.json").read_text(encoding="utf-8"))
        assert tokenizer.kind == config[f"{side}_tokenizer"]
        assert tokenizer.vocab_size + 3 == config["model_config"][f"{side}_vocab_size"]  # PAD, BOS, EOS
    assert not (run / "tokenizer.json").exists()
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == [
        "model.safetensors", "optimizer.safetensors", "trainer.json"]
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header, *rows = metrics(run)
    assert header == TRANSLATION_COLUMNS
    assert [row[0] for row in rows] == ["1", "2", "3", "4", "5", "6"]  # --log-every 1
    evaluated = [row[0] for row in rows if row[header.index("val_bleu")] != ""]
    assert evaluated == ["3", "6"]  # --eval-every 3
    for row in rows:
        if row[0] in evaluated:
            bleu, exact = float(row[header.index("val_bleu")]), float(row[header.index("val_exact_match")])
            assert 0.0 <= bleu <= 100.0 and 0.0 <= exact <= 1.0
            assert float(row[header.index("val_loss")]) > 0.0


def test_the_tokens_column_counts_target_tokens(lstm_run, tsv):
    """Each step adds its batch's target tokens (each target's tokens and its EOS), not
    B x T of the padded batch: the batches are drawn again here and counted by hand."""
    config = json.loads((lstm_run / "config.json").read_text())
    target = tokenizer_from_json((lstm_run / "target_tokenizer.json").read_text(encoding="utf-8"))
    seed, batch_size = config["training"]["seed"], config["training"]["batch_size"]
    corpus = tsv_corpus(tsv, seed=seed)
    rng = np.random.default_rng([seed, 1])  # the trainer's batch generator
    expected, padded = [], []
    for _ in range(config["training"]["steps"]):
        lengths = [len(target.encode(sentence)) + 1 for _, sentence in corpus.sample_train(rng, batch_size)]
        expected.append(sum(lengths) + (expected[-1] if expected else 0))
        padded.append(batch_size * max(lengths) + (padded[-1] if padded else 0))
    header, *rows = metrics(lstm_run)
    tokens = [int(row[header.index("tokens")]) for row in rows]
    assert tokens == expected
    assert tokens != padded  # the corpus's targets differ in length, so the two counts do
    trainer = json.loads((lstm_run / "checkpoint" / "trainer.json").read_text())
    assert trainer["tokens"] == expected[-1]


# ---- python -m tinylm.translate


def test_translate_prints_one_line_for_a_text(lstm_run):
    done = subprocess.run([sys.executable, "-m", "tinylm.translate", "--checkpoint", str(lstm_run),
                           "--text", "three four five"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1
    out = io.StringIO()
    assert translate.main(["--checkpoint", str(lstm_run), "--text", "three four five"], out=out) == [
        done.stdout[:-1]]


def test_translate_prints_one_line_per_input_line_in_order(run, tmp_path):
    config = json.loads((run / "config.json").read_text())
    corpus = load_parallel_corpus(config)
    sources = [source for source, _ in corpus.validation[:6]]
    lines = translate_lines(run, sources, tmp_path)
    assert len(lines) == len(sources)
    for source, line in zip(sources, lines):  # each as it is translated on its own
        out = io.StringIO()
        translate.main(["--checkpoint", str(run), "--text", source], out=out)
        assert out.getvalue() == line + "\n"


def test_beam_search_of_one_is_greedy_and_a_wider_beam_prints_a_line_each(run, tmp_path):
    from tinylm.decoding import beam_search, greedy_decode
    from tinylm.models.seq2seq import Source
    from tinylm.parallel_corpus import encode_batch
    from tinylm.runs import load_run

    sources = ["one", "seven three", "two two nine", "ten ten ten ten"]
    greedy = translate_lines(run, sources, tmp_path)
    assert translate_lines(run, sources, tmp_path, "--beam", "1") == greedy
    beamed = translate_lines(run, sources, tmp_path, "--beam", "3")
    assert len(beamed) == len(sources)
    for source, line in zip(sources, beamed):  # a sentence's beam does not depend on the others in the file
        out = io.StringIO()
        translate.main(["--checkpoint", str(run), "--text", source, "--beam", "3"], out=out)
        assert out.getvalue() == line + "\n"
    # The search itself, on the trained model: a beam of one follows the greedy choices.
    _, tokenizers, model, _, _ = load_run(run)
    batch = encode_batch([(s, "") for s in sources], tokenizers.source, tokenizers.target)
    source = Source(batch.source_ids, batch.source_lengths)
    assert beam_search(model, source, len(sources), 1, 20) == greedy_decode(model, source, len(sources), 20)


def test_show_attention_draws_a_png(run, tmp_path):
    picture = tmp_path / "alignment.png"
    out = io.StringIO()
    translate.main(["--checkpoint", str(run), "--text", "two hundred and five", "--show-attention", str(picture)],
                   out=out)
    assert out.getvalue().count("\n") == 1
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def refused(main, argv, capsys, prog):
    """The one line ``main`` wrote to stderr as it exited with status 2 through ``cli.run``."""
    status = cli.run(main, argv, prog=prog)
    captured = capsys.readouterr()
    assert status == 2, captured
    assert captured.err.count("\n") == 1 and captured.out == "", captured
    return captured.err


def test_translate_refuses_an_empty_input_line_naming_it(lstm_run, tmp_path, capsys):
    path = tmp_path / "sources.txt"
    path.write_text("one two\n\nthree\n", encoding="utf-8")
    err = refused(translate.main, ["--checkpoint", str(lstm_run), "--input", str(path)], capsys, "translate")
    assert f"--input {path} line 2 is empty" in err


def test_translate_refuses_a_language_model_and_generate_a_translation_model(lstm_run, language_model_run, capsys):
    err = refused(translate.main, ["--checkpoint", str(language_model_run), "--text", "one"], capsys, "translate")
    assert "holds a language model" in err and "tinylm.generate" in err
    err = refused(generate.main, ["--checkpoint", str(lstm_run), "--max-new-tokens", "3"], capsys, "generate")
    assert "holds a translation model" in err and "tinylm.translate" in err


# ---- python -m tinylm.evaluate


@pytest.mark.parametrize("run, splits", [("lstm_run", ("test", "validation")),
                                         ("transformer_run", ("test",))])  # 500 pairs: one split is enough
def test_evaluate_scores_a_split_as_bleu_recomputes_it(run, splits, tmp_path, capsys, request):
    run = request.getfixturevalue(run)
    config = json.loads((run / "config.json").read_text())
    corpus = load_parallel_corpus(config)
    for split in splits:
        argv = [] if split == "test" else ["--split", split]  # test is the default
        result = evaluate.main(["--checkpoint", str(run), *argv])
        printed = capsys.readouterr().out
        pairs = getattr(corpus, split)
        sources, references = [s for s, _ in pairs], [t for _, t in pairs]
        outputs = translate_lines(run, sources, tmp_path)
        assert result["outputs"] == outputs and result["references"] == references
        tokenize = config["bleu_tokenize"]  # characters for en-de numbers, else words
        assert result["bleu"] == corpus_bleu(outputs, references, tokenize=tokenize).score
        assert result["exact_match"] == exact_match(outputs, references)
        assert f"the {split} split" in printed and f"of {len(pairs):,} pairs" in printed
        assert f"BLEU {result['bleu']:.2f} ({tokenize}), exact match {result['exact_match']:.2%}" in printed


def test_evaluate_scores_every_pair_of_a_tsv(lstm_run, tmp_path, capsys):
    """A TSV whose references are, where they can be (a TSV side is stripped and never
    empty), the model's own translations: exact match is the share of those and BLEU is
    what corpus_bleu makes of it, above 0."""
    sources = ["one", "two three", "four five six", "seven", "eight nine", "ten ten", "three", "nine one two"]
    outputs = translate_lines(lstm_run, sources, tmp_path)
    own = [bool(output.strip()) and output.strip() == output for output in outputs]
    assert any(own), f"no translation can serve as a reference: {outputs}"
    references = [output if usable else GERMAN[i] for i, (output, usable) in enumerate(zip(outputs, own))]
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in zip(sources, references)), encoding="utf-8")
    result = evaluate.main(["--checkpoint", str(lstm_run), "--data", str(path)])
    printed = capsys.readouterr().out
    assert result["outputs"] == outputs and result["references"] == references
    assert result["exact_match"] == exact_match(outputs, references) == sum(own) / len(sources)
    assert result["bleu"] == corpus_bleu(outputs, references).score > 0.0
    assert f"{path} (checkpoint step 6, greedy)" in printed and "of 8 pairs" in printed


# ---- mistakes: one line, exit status 2, nothing written

BAD_TRANSLATE_FLAGS = [
    (["--task", "translate", "--model", "lstm"], "--model lstm is not a translation model; with --task translate "
     "choose one of seq2seq-lstm, seq2seq-transformer"),
    (["--task", "language-model", "--model", "seq2seq-lstm"], "--model seq2seq-lstm is not a language model; "
     "with --task language-model choose one of lstm, transformer"),
    (["--task", "translate", "--stateful"], "--stateful carries a model's state across batches; "
     "--model seq2seq-lstm carries none"),
    (["--task", "translate", "--target-tokenizer", "bpe", "--target-vocab-size", "100"],
     "--target-vocab-size must be at least 256 for BPE (the byte values), got 100"),
    (["--task", "translate", "--source-tokenizer", "bpe", "--source-vocab-size", "255"],
     "--source-vocab-size must be at least 256 for BPE"),
    (["--task", "translate", "--model", "seq2seq-transformer", "--d-model", "15", "--n-heads", "2"],
     "--d-model 15 must be divisible by --n-heads 2"),
    (["--task", "translate", "--hidden-dim", "127"], "--hidden-dim 127 must be even for seq2seq-lstm"),
]


def test_a_tsv_sentence_longer_than_the_transformers_positions_is_refused_before_the_run(tmp_path, monkeypatch,
                                                                                         capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "long.tsv"
    long_target = " ".join(["eins"] * 300)  # 300 words: more than 256 positions in word tokens
    path.write_text("one\teins\ntwo\tzwei\nthree\tdrei\nfour\tvier\nmany\t" + long_target + "\n",
                    encoding="utf-8")
    status = cli.run(train.main, ["--task", "translate", "--data", str(path), "--target-tokenizer", "word",
                                  *TRANSFORMER, "--out", str(tmp_path / "run")], prog="train")
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert "a target sentence of 301 tokens" in err and "256 positions" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", BAD_TRANSLATE_FLAGS, ids=[" ".join(f) for f, _ in BAD_TRANSLATE_FLAGS])
def test_train_refuses_translation_flags_before_any_work(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(tmp_path)  # a run would land in runs/ here
    with pytest.raises(SystemExit) as stop:
        train.main(flags)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, where", [
    ("one\teins\ntwo zwei\nthree\tdrei\n", "line 2: no tab"),
    ("one\teins\ntwo\tzwei\tdrei\n", "line 2: 2 tabs"),
    ("one\teins\n\t zwei\n", "line 2: the source sentence is empty"),
    (b"one\teins\ntwo\tzw\xffei\n", "line 2: not UTF-8 text"),
])
def test_a_malformed_tsv_is_refused_naming_its_line_and_leaves_no_run(tmp_path, monkeypatch, capsys, content, where):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.tsv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for out in (["--out", str(tmp_path / "run")], []):  # a named folder, and the default runs/<date-time>
        err = refused(train.main, ["--task", "translate", "--data", str(path), *TINY, *out], capsys, "train")
        assert f"{path}, {where}" in err, err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tsv"]
