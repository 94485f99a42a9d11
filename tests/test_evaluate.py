"""Tests of tqla_torch.training.evaluate: both perplexity protocols, LAMBADA, text files."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from tqla_torch.data import builtin_tokenizer, tokenize_texts
from tqla_torch.training.evaluate import lambada, load_lambada, perplexity, text_perplexity

VOCAB = 97


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=32,
        vocab_size=VOCAB,
        bos_token_id=0,
        eos_token_id=0,
        initializer_range=0.3,  # peaky predictions: NLLs differ visibly between tokens
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def stream():
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, VOCAB, (203,), generator=generator)


def _token_nll(model, ids: torch.Tensor) -> torch.Tensor:
    """NLL of tokens 1..n-1 of one window, computed one window at a time."""
    with torch.no_grad():
        logits = model(ids[None]).logits[0, :-1].double()
    return -torch.log_softmax(logits, -1).gather(1, ids[1:, None]).squeeze(1)


def test_non_overlapping_protocol_by_hand(model, stream):
    window = 32
    means, count = [], 0
    for start in range(0, len(stream), window):
        chunk = stream[start : start + window]
        if len(chunk) >= 2:
            nll = _token_nll(model, chunk)
            means.append(nll.mean().item())
            count += len(nll)
    expected = sum(means) / len(means)
    result = perplexity(model, stream, window=window, batch_size=3)
    assert result.n_windows == 7 == len(means)  # 6 full windows + 11-token tail
    assert result.n_tokens == count == 203 - 7
    assert result.nll == pytest.approx(expected, rel=1e-5)
    assert result.ppl == pytest.approx(math.exp(expected), rel=1e-5)
    assert result.tokens_per_s > 0


def test_strided_protocol_by_hand(model, stream):
    window, stride = 32, 12
    total, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(stream), stride):
        end = min(begin + window, len(stream))
        new_tokens = end - prev_end
        nll = _token_nll(model, stream[begin:end])
        scored = nll[-min(new_tokens, len(nll)) :]
        total += scored.sum().item()
        count += len(scored)
        prev_end = end
        if end == len(stream):
            break
    result = perplexity(model, stream, window=window, stride=stride, batch_size=4)
    assert count == len(stream) - 1  # every token but the first is scored exactly once
    assert result.n_tokens == count
    assert result.nll == pytest.approx(total / count, rel=1e-5)
    assert result.ppl == pytest.approx(math.exp(total / count), rel=1e-5)


def test_stride_equal_to_window_weights_tokens_not_windows(model, stream):
    by_window = perplexity(model, stream, window=32)
    by_token = perplexity(model, stream, window=32, stride=32)
    assert by_token.n_tokens == by_window.n_tokens
    nlls = [_token_nll(model, stream[s : s + 32]) for s in range(0, len(stream), 32)]
    token_mean = torch.cat(nlls).mean().item()
    assert by_token.nll == pytest.approx(token_mean, rel=1e-5)
    assert by_window.nll != pytest.approx(by_token.nll, rel=1e-6)


def test_uniform_model_has_perplexity_equal_to_the_vocabulary():
    class Uniform(torch.nn.Module):
        def forward(self, ids):
            return torch.zeros(*ids.shape, 10)

    for stride in (None, 3):
        result = perplexity(Uniform(), torch.arange(50) % 10, window=8, stride=stride)
        assert result.ppl == pytest.approx(10.0, rel=1e-6)


def test_window_is_clipped_to_n_positions(model, stream, caplog):
    with caplog.at_level("INFO", logger="tqla_torch.training.evaluate"):
        result = perplexity(model, stream, window=1024)
    assert result.n_windows == math.ceil(203 / 32)
    assert "clipped to the model's n_positions 32" in caplog.text
    assert result.nll == pytest.approx(perplexity(model, stream, window=32).nll)


def test_mode_is_restored(model, stream):
    model.train()
    perplexity(model, stream[:40], window=16)
    assert model.training
    model.eval()
    perplexity(model, stream[:40], window=16)
    assert not model.training  # the fixture stays in eval mode for the hand computations


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(token_ids=torch.zeros(2, 5, dtype=torch.long)), ValueError, "token_ids must be 1-D"),
        (dict(token_ids=torch.zeros(5)), ValueError, "must hold integers"),
        (dict(token_ids=torch.zeros(1, dtype=torch.long)), ValueError, "has 1 token, fewer"),
        (dict(token_ids=torch.zeros(0, dtype=torch.long)), ValueError, "has 0 tokens, fewer"),
        (dict(token_ids=torch.tensor([1, -2])), ValueError, "non-negative"),
        (dict(window=0), ValueError, "window must be a positive int"),
        (dict(window=1), ValueError, "window must be at least 2"),
        (dict(stride=40, window=32), ValueError, r"stride must be <= window \(32\)"),
        (dict(stride=0), ValueError, "stride must be a positive int"),
        (dict(batch_size=0), ValueError, "batch_size must be a positive int"),
        (dict(token_ids=torch.arange(31)), ValueError, "has 31 tokens, fewer than one window"),
        (dict(token_ids=torch.arange(12), window=16), ValueError, "12 tokens.*window of 16"),
    ],
)
def test_perplexity_bad_inputs(model, stream, kwargs, error, message):
    kwargs = {"token_ids": stream, **kwargs}
    with pytest.raises(error, match=message):
        perplexity(model, **kwargs)


def test_perplexity_rejects_non_modules():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        perplexity(lambda ids: ids, torch.arange(10))


def test_text_perplexity_on_a_raw_text_file(tmp_path):
    tok = builtin_tokenizer(vocab_size=512)
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tok))
    )
    text = " = Valkyria Chronicles III = \n\n Senjō no Valkyria 3 : Unrecorded Chronicles ...\n" * 8
    path = tmp_path / "wiki.test.raw"
    path.write_text(text, encoding="utf-8")
    from_file = text_perplexity(lm, tok, path, window=64)
    direct = perplexity(lm, tokenize_texts([text], tok), window=64)
    assert from_file.nll == pytest.approx(direct.nll, rel=1e-6)
    assert from_file.n_tokens == direct.n_tokens
    with pytest.raises(FileNotFoundError, match="wiki.valid.raw"):
        text_perplexity(lm, tok, tmp_path / "wiki.valid.raw")
    for short in ("", "Valkyria"):  # an empty or too short text: refused, with the count
        path.write_text(short, encoding="utf-8")
        n = len(tokenize_texts([short], tok))
        with pytest.raises(ValueError, match=rf"has {n} tokens?, fewer than one window of 64"):
            text_perplexity(lm, tok, path, window=64)


# ---- LAMBADA -----------------------------------------------------------------------------------


class RepeatLast(torch.nn.Module):
    """Predicts that the next token repeats the current one (logit 10 for it, 0 elsewhere)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, ids, attention_mask=None):
        return 10.0 * torch.nn.functional.one_hot(ids, self.vocab).float()


def test_lambada_accuracy_and_perplexity_by_hand():
    tok = builtin_tokenizer(vocab_size=512)
    assert len(tok(" the")["input_ids"]) == 1 and len(tok(" cat")["input_ids"]) == 2
    examples = ["the the the", "the the cat"]
    result = lambada(RepeatLast(len(tok)), tok, examples)
    assert result.n_examples == 2
    assert result.accuracy == 0.5
    right = math.log(1 + (len(tok) - 1) * math.exp(-10))  # NLL of the predicted token
    wrong = right + 10  # NLL of any other token
    nll_cat = wrong + wrong  # " cat" is two tokens, neither repeats its predecessor
    expected = (right + nll_cat) / 2
    assert result.nll == pytest.approx(expected, rel=1e-5)
    assert result.ppl == pytest.approx(math.exp(expected), rel=1e-5)


def test_lambada_batched_equals_one_by_one():
    tok = builtin_tokenizer(vocab_size=512)
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=16, vocab_size=len(tok), n_inner=64)
    )
    examples = [
        "The for statement is used to iterate over the elements of a sequence",
        "A class definition defines a class object",
        "short one",
        "Names refer to objects and are introduced by name binding operations like import",
    ]
    batched = lambada(lm, tok, examples, batch_size=3)
    singles = [lambada(lm, tok, [e], batch_size=1) for e in examples]
    assert batched.nll == pytest.approx(sum(s.nll for s in singles) / len(singles), rel=1e-5)
    assert batched.accuracy == sum(s.accuracy for s in singles) / len(singles)


def test_load_lambada_and_errors(tmp_path):
    jsonl = tmp_path / "lambada_test.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t}) for t in ["a b c", "d e"]) + "\n")
    assert load_lambada(jsonl) == ["a b c", "d e"]
    txt = tmp_path / "lambada.txt"
    txt.write_text("a b c\n\nd e\n")
    assert load_lambada(txt) == ["a b c", "d e"]
    tok = builtin_tokenizer(vocab_size=512)
    result = lambada(RepeatLast(len(tok)), tok, txt)
    assert result.n_examples == 2
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_lambada(tmp_path / "missing.jsonl")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no examples"):
        load_lambada(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match=r"examples\[1\] has no context"):
        lambada(RepeatLast(len(tok)), tok, ["a b", "single"])
    with pytest.raises(ValueError, match="examples must not be empty"):
        lambada(RepeatLast(len(tok)), tok, [])
