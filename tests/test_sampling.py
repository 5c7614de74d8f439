"""Each processor on hand-made distributions, with exact expected outcomes."""

import math

import pytest
import torch

import reference_sampling as sampling

NO_IDS = torch.tensor([], dtype=torch.long)


def logits_of(probs):
    return torch.tensor([math.log(p) if p > 0 else float("-inf") for p in probs])


def kept(logits):
    return [i for i, v in enumerate(logits.tolist()) if v != float("-inf")]


def test_top_p_keeps_smallest_set_reaching_p():
    logits = logits_of([0.5, 0.3, 0.15, 0.05])
    assert kept(sampling.top_p(0.7)(NO_IDS, logits)) == [0, 1]
    assert kept(sampling.top_p(0.5)(NO_IDS, logits)) == [0]
    assert kept(sampling.top_p(0.81)(NO_IDS, logits)) == [0, 1, 2]


def test_top_p_always_keeps_the_most_likely_token():
    logits = logits_of([0.9, 0.0, 0.0, 0.1])
    assert kept(sampling.top_p(0.01)(NO_IDS, logits)) == [0]


def test_top_p_one_is_a_no_op():
    assert sampling.top_p(1.0) is None


def test_top_k_keeps_k_highest():
    logits = torch.tensor([1.0, 4.0, 3.0, 2.0])
    assert kept(sampling.top_k(2)(NO_IDS, logits)) == [1, 2]
    assert kept(sampling.top_k(10)(NO_IDS, logits)) == [0, 1, 2, 3]


def test_temperature_scales_logits():
    logits = torch.tensor([2.0, 1.0])
    assert sampling.temperature(0.5)(NO_IDS, logits).tolist() == [4.0, 2.0]
    assert sampling.temperature(1.0) is None


def test_repetition_penalty_follows_hugging_face_semantics():
    logits = torch.tensor([2.0, -2.0, 1.0, 3.0])
    out = sampling.repetition_penalty(2.0)(torch.tensor([0, 1, 1]), logits)
    assert out.tolist() == [1.0, -4.0, 1.0, 3.0]  # positive / p, negative * p, unseen untouched


def test_repetition_penalty_matches_transformers_processor():
    from transformers import RepetitionPenaltyLogitsProcessor

    torch.manual_seed(0)
    logits = torch.randn(50)
    ids = torch.tensor([3, 7, 7, 20, 49])
    ours = sampling.repetition_penalty(1.3)(ids, logits)
    theirs = RepetitionPenaltyLogitsProcessor(1.3)(ids.unsqueeze(0), logits.unsqueeze(0).clone())[0]
    assert torch.allclose(ours, theirs)


@pytest.mark.parametrize(
    "factory,value",
    [
        (sampling.temperature, 0.0),
        (sampling.temperature, -1.0),
        (sampling.top_p, 0.0),
        (sampling.top_p, 1.5),
        (sampling.top_k, 0),
        (sampling.repetition_penalty, 0.0),
    ],
)
def test_factories_validate_their_arguments(factory, value):
    with pytest.raises(ValueError):
        factory(value)


def test_greedy_chooses_argmax():
    assert sampling.choose(logits_of([0.1, 0.6, 0.3]), None) == 1


def test_seeded_sampling_is_reproducible_and_follows_the_distribution():
    logits = logits_of([0.9, 0.0, 0.0, 0.1])
    draws = [sampling.choose(logits, sampling.make_generator(s)) for s in range(200)]
    assert set(draws) <= {0, 3}
    assert 150 < draws.count(0) < 200
    again = [sampling.choose(logits, sampling.make_generator(s)) for s in range(200)]
    assert draws == again


def test_the_batched_gumbel_draw_follows_the_distribution_and_never_picks_a_masked_token():
    """``choose_batch``'s draw (Gumbel-max with ``E = -log(1 - U)``): 20,000 seeded draws of
    [0.5, 0.3, 0.15, 0.05, 0] land within 1.5 points of each probability; the zero never comes."""
    from nb_completion.engine.batch_sampling import RowParams, RowTable, choose_batch

    probs = [0.5, 0.3, 0.15, 0.05, 0.0]
    rows, steps = 50, 400
    table = RowTable(rows, len(probs), torch.device("cpu"))
    for r in range(rows):
        table.set(r, RowParams(greedy=False, generator=sampling.make_generator(r)), [])
    logits = logits_of(probs).repeat(rows, 1)
    counts = [0] * len(probs)
    for _ in range(steps):
        for chosen in choose_batch(logits, table, 0, [None] * rows, 1):
            counts[chosen.token_id] += 1
    shares = [c / (rows * steps) for c in counts]
    assert counts[4] == 0
    assert all(abs(share - p) < 0.015 for share, p in zip(shares, probs)), shares


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5])
def test_a_wide_nucleus_found_from_a_sorted_prefix_equals_the_full_sorts(scale):
    """``_nucleus_floor`` (topk prefixes, growing) gives bit for bit the threshold a full sort
    gives: the same values in the same order, the same cumulative sums."""
    from nb_completion.engine.batch_sampling import _nucleus_floor

    generator = torch.Generator().manual_seed(int(scale * 10))
    for trial in range(12):
        logits = torch.randn(49152, generator=generator) * scale
        if trial % 3 == 0:
            logits[:64] = logits.max()  # ties at the top
        probs = torch.softmax(logits, -1)
        for top_p in (0.5, 0.9, 0.95, 0.999):
            full = torch.sort(probs, descending=True).values
            count = int(((full.cumsum(-1) - full) < top_p).sum().clamp(min=1))
            assert torch.equal(_nucleus_floor(probs, top_p, 256), full[count - 1])
