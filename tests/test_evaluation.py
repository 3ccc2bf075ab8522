"""drakegpt/evaluation.py: the exact evaluation predicts every character of a split once, deterministically; the
original's random-batch rule stays available; losses in nats and in bits per character."""

import math

import pytest
import torch
import torch.nn.functional as F

from drakegpt.data import CharVocab, build_corpus
from drakegpt.evaluation import Windows, bits, evaluate, evaluation_windows, exact_windows
from drakegpt.models.language_model import LanguageModel
from drakegpt.schema import Evaluation, Precision
from helpers.runs import typed_config
from test_models import config_of

CPU = torch.device("cpu")


@pytest.mark.parametrize("length, T", [(20, 8), (17, 8), (9, 8), (100, 7), (1000, 64)])
def test_every_character_after_the_first_is_predicted_exactly_once(length, T):
    starts, first = exact_windows(length, T)
    counted = torch.zeros(length, dtype=torch.long)
    for start, skip in zip(starts.tolist(), first.tolist()):
        assert 0 <= start and start + T <= length - 1  # every window and its targets lie inside the split
        for j in range(skip, T):
            counted[start + 1 + j] += 1  # window position j predicts character start + 1 + j
    assert counted.tolist() == [0] + [1] * (length - 1)


def test_the_exact_loss_is_the_mean_over_the_characters_of_a_model_that_sees_each_window():
    """Against a plain computation: each window's logits, cross-entropy of the counted targets, averaged."""
    torch.manual_seed(0)
    model = LanguageModel(config_of(vocab_size=29)).eval()
    data = torch.randint(29, (203,))
    starts, first = exact_windows(len(data), 8)
    got = evaluate(model, data, Windows(starts[None], first[None]), Precision.fp32, CPU).item()
    total, n = 0.0, 0
    with torch.no_grad():
        for start, skip in zip(starts.tolist(), first.tolist()):
            logits = model(data[start:start + 8][None, None])[0][0, 0]
            losses = F.cross_entropy(logits, data[start + 1:start + 9], reduction="none")
            total, n = total + losses[skip:].sum().item(), n + 8 - skip
    assert n == 202 and got == pytest.approx(total / n, rel=1e-6)


def test_two_evaluations_of_the_same_weights_give_the_same_loss_to_the_last_digit():
    cfg, _ = typed_config()
    corpus = build_corpus(cfg.data, 8)
    torch.manual_seed(1)
    model = LanguageModel(config_of(vocab_size=len(corpus.vocab)))
    windows = evaluation_windows(corpus, Evaluation.exact, [5], 8, 32, 200)
    first = evaluate(model, corpus.val, windows["val"], Precision.fp32, CPU)
    again = evaluation_windows(corpus, Evaluation.exact, [9], 8, 32, 200)  # another seed: the same windows
    assert torch.equal(first, evaluate(model, corpus.val, again["val"], Precision.fp32, CPU))
    train = windows["train"].starts
    assert train.shape == windows["val"].starts.shape and train[0, -1] <= len(corpus.train) - 9  # as many, spread


def test_the_originals_rule_draws_random_windows_per_seed():
    cfg, _ = typed_config()
    corpus = build_corpus(cfg.data, 8)
    a = evaluation_windows(corpus, Evaluation.random, [1, 2], 8, 32, 5)
    assert a["val"].starts.shape == (2, 5 * 32) and not torch.equal(a["val"].starts[0], a["val"].starts[1])
    b = evaluation_windows(corpus, Evaluation.random, [1], 8, 32, 5)
    assert torch.equal(a["val"].starts[0], b["val"].starts[0])  # a replica draws what its single run draws


def test_a_test_split_is_evaluated_exactly_and_bits_are_nats_over_ln_2():
    cfg, _ = typed_config("data.train_fraction=0.8", "data.test_fraction=0.1")
    corpus = build_corpus(cfg.data, 8)
    windows = evaluation_windows(corpus, Evaluation.exact, [1], 8, 32, 5)
    assert set(windows) == {"train", "val", "test"}
    assert bits(math.log(2)) == pytest.approx(1.0) and bits(2.0) == pytest.approx(2.0 / 0.6931471805599453)


def test_a_stop_during_an_evaluation_abandons_it():
    from drakegpt.evaluation import EvaluationStopped

    model = LanguageModel(config_of(vocab_size=4))
    data = torch.randint(4, (10000,))
    starts, first = exact_windows(len(data), 8)
    with pytest.raises(EvaluationStopped):
        evaluate(model, data, Windows(starts[None], first[None]), Precision.fp32, CPU, should_stop=lambda: True)
    assert model.training  # left as it was found


def test_a_vocabulary_of_one_character_still_evaluates():
    vocab = CharVocab("a")
    model = LanguageModel(config_of(vocab_size=1))
    data = vocab.encode("a" * 50)
    starts, first = exact_windows(len(data), 8)
    assert evaluate(model, data, Windows(starts[None], first[None]), Precision.fp32, CPU).item() == pytest.approx(0.0)
