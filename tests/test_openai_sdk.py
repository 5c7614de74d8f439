"""The ``openai`` SDK's ``completions.create`` over the fields the server takes, on ``/v1`` and on
llama-stack's ``/v1/openai/v1`` alias (as llama-stack's own tests build their OpenAI client);
tiny random Llama, greedy unless a seed is given."""

from __future__ import annotations

import pytest

from nb_completion import serve

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def server(tiny_model_id):
    handle = serve(port=0, models=[tiny_model_id])
    yield handle
    handle.stop()


@pytest.fixture(scope="module", params=["/v1", "/v1/openai/v1"])
def oai(server, request):
    from openai import OpenAI

    return OpenAI(base_url=server.url + request.param, api_key="unused", max_retries=0, timeout=60)


def test_prompt_forms_and_choices(oai, tiny_model_id):
    kw = dict(model=tiny_model_id, max_tokens=5, temperature=0)
    one = oai.completions.create(prompt=PROMPT, **kw).choices[0].text
    other = oai.completions.create(prompt="All you need is", **kw).choices[0].text
    listed = oai.completions.create(prompt=[PROMPT, "All you need is"], n=2, **kw)
    assert [c.index for c in listed.choices] == [0, 1, 2, 3]
    assert [c.text for c in listed.choices] == [one, one, other, other]
    assert listed.usage.completion_tokens == 20 and listed.usage.total_tokens == listed.usage.prompt_tokens + 20

    ids = oai.completions.create(prompt=PROMPT, echo=True, max_tokens=0, temperature=0, model=tiny_model_id, logprobs=0)
    assert ids.choices[0].text == PROMPT
    as_ids = oai.completions.create(prompt=[[299, 361, 261, 369]], **kw)  # PROMPT's ids, no BOS
    assert oai.completions.create(prompt=[299, 361, 261, 369], **kw).choices[0].text == as_ids.choices[0].text


def test_sampling_fields(oai, tiny_model_id):
    kw = dict(model=tiny_model_id, prompt=PROMPT, max_tokens=8)
    seeded = dict(kw, temperature=1.0, top_p=0.9, seed=7, n=2, best_of=3)
    first, again = oai.completions.create(**seeded), oai.completions.create(**seeded)
    assert [c.text for c in first.choices] == [c.text for c in again.choices] and len(first.choices) == 2

    greedy = oai.completions.create(**kw, temperature=0, logprobs=1).choices[0]
    stops = [f"never-{i}" for i in range(15)] + [greedy.text[3:5]]
    cut = oai.completions.create(**kw, temperature=0, stop=stops).choices[0]
    assert cut.text == greedy.text[: greedy.text.index(greedy.text[3:5])] and cut.finish_reason == "stop"

    forced = oai.completions.create(**kw, temperature=0, logit_bias={"300": 100}).choices[0].text
    assert forced == forced[:2] * 8  # token 300 ("Pa"), over and over
    penalised = oai.completions.create(**kw, temperature=0, logprobs=1, presence_penalty=2.0, frequency_penalty=2.0)
    assert penalised.choices[0].logprobs.tokens[0] == greedy.logprobs.tokens[0]
    assert oai.completions.create(**kw, temperature=0, suffix="", user="someone").choices[0].text == greedy.text


def test_stream_with_usage(oai, tiny_model_id):
    kw = dict(model=tiny_model_id, prompt=PROMPT, max_tokens=6, temperature=0)
    whole = oai.completions.create(**kw, logprobs=2)
    chunks = list(oai.completions.create(**kw, logprobs=2, stream=True, stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == whole.choices[0].text
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    assert tokens == whole.choices[0].logprobs.tokens
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
