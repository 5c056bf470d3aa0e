import torch

from headrace.engine.grammar_bitmask import GrammarBitmask
from headrace.text import Tokenizer
from headrace.text.grammar import GrammarCompiler
from tests.engine.factories import CPU, make_request

BLOCKED = -1e38  # masked logits end up below this


def allowed_ids(compiler: GrammarCompiler, tokenizer: Tokenizer, prefix: str) -> set[int]:
    """Token ids a JSON-object grammar allows after `prefix`, as the matcher itself says."""
    matcher = compiler.json_object().matcher()
    assert matcher.consume_tokens(tokenizer.encode(prefix))
    mask = torch.zeros((tokenizer.vocab_size + 31) // 32, dtype=torch.int32)
    matcher.unsafe_compute_mask_ptr(mask.data_ptr(), mask.numel() * 4)
    bits = (mask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
    return set(bits.flatten().nonzero().flatten().tolist())


def test_only_constrained_rows_are_masked(
    tiny_compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    vocab = tiny_tokenizer.vocab_size
    requests = [
        make_request("free"),
        make_request("json", grammar=tiny_compiler.json_object()),
        make_request("free too"),
    ]
    logits = torch.randn(3, vocab)
    before = logits.clone()
    GrammarBitmask(vocab, CPU).apply(logits, requests)
    assert torch.equal(logits[0], before[0]) and torch.equal(logits[2], before[2])
    allowed = allowed_ids(tiny_compiler, tiny_tokenizer, "")
    assert 0 < len(allowed) < vocab
    kept = (logits[1] > BLOCKED).nonzero().flatten().tolist()
    assert set(kept) == allowed
    assert torch.equal(logits[1, kept], before[1, kept])


def test_an_unconstrained_batch_costs_nothing(tiny_tokenizer: Tokenizer) -> None:
    bitmask = GrammarBitmask(tiny_tokenizer.vocab_size, CPU)
    logits = torch.randn(2, tiny_tokenizer.vocab_size)
    before = logits.clone()
    bitmask.apply(logits, [make_request("a"), make_request("b")])
    assert torch.equal(logits, before)
    assert bitmask._buffers is None


def test_buffers_are_reused_across_steps(
    tiny_compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    vocab = tiny_tokenizer.vocab_size
    bitmask = GrammarBitmask(vocab, CPU)
    grammar = tiny_compiler.json_object()
    bitmask.apply(torch.randn(2, vocab), [make_request("a", grammar=grammar), make_request("b")])
    buffers = bitmask._buffers
    bitmask.apply(torch.randn(1, vocab), [make_request("c", grammar=grammar)])
    assert bitmask._buffers is buffers
    requests = [make_request(str(i), grammar=grammar) for i in range(3)]
    bitmask.apply(torch.randn(3, vocab), requests)  # more rows than ever: grows once
    assert bitmask._buffers is not buffers


def test_model_ids_past_the_tokenizer_are_masked(
    tiny_compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    vocab = tiny_tokenizer.vocab_size
    logits = torch.zeros(1, vocab + 40)
    logits[0, vocab:] = 1000.0  # the model's padding rows, never to be chosen
    GrammarBitmask(vocab + 40, CPU).apply(
        logits, [make_request("json", grammar=tiny_compiler.json_object())]
    )
    assert (logits[0, vocab:] < BLOCKED).all()
    allowed = allowed_ids(tiny_compiler, tiny_tokenizer, "")
    assert set((logits[0] > BLOCKED).nonzero().flatten().tolist()) == allowed


def test_tokenizer_ids_past_the_model_are_dropped(
    tiny_compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    model_vocab = tiny_tokenizer.vocab_size - 100
    logits = torch.zeros(1, model_vocab)
    GrammarBitmask(model_vocab, CPU).apply(
        logits, [make_request("json", grammar=tiny_compiler.json_object())]
    )
    allowed = {i for i in allowed_ids(tiny_compiler, tiny_tokenizer, "") if i < model_vocab}
    assert set((logits[0] > BLOCKED).nonzero().flatten().tolist()) == allowed
