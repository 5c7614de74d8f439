"""Stop strings never reach the output, including when split across tokens."""

from nb_completion.engine.records import TokenRecord
from nb_completion.engine.stopping import StopStringFilter


def rec(i, text):
    return TokenRecord(index=i, token_id=i, text=text, logprob=-1.0, rank=1, top=(), entropy=0.0)


def run(pieces, stops):
    f = StopStringFilter(stops)
    deltas = [f.push(rec(i, p)) for i, p in enumerate(pieces)]
    if not f.stopped:
        deltas.append(f.flush())
    return f, deltas


def test_no_stop_strings_passes_text_through_token_by_token():
    f, deltas = run(["Hel", "lo"], [])
    assert [d.text for d in deltas[:2]] == ["Hel", "lo"]
    assert not f.stopped


def test_stop_string_split_across_tokens_is_held_back_and_removed():
    f, deltas = run(["Hello", " wor", "ld", "END", "ing"], ["worldEND"])
    assert f.stopped
    assert "".join(d.text for d in deltas) == "Hello "
    # " wor" was held (a possible start of the stop string), never streamed
    assert deltas[1].text == ""


def test_held_text_is_released_when_it_turns_out_not_to_be_a_stop():
    f, deltas = run(["a", "\n", "b"], ["\n\n"])
    assert deltas[1].text == ""  # "\n" could start "\n\n"
    assert deltas[2].text == "\nb"
    assert [t.index for t in deltas[2].tokens] == [1, 2]
    assert not f.stopped


def test_token_straddling_a_stop_is_trimmed_and_each_token_delivered_once():
    f, deltas = run(["x", "yz.", "w"], ["z."])
    assert "".join(d.text for d in deltas) == "xy"
    indices = [t.index for d in deltas for t in d.tokens]
    assert indices == [0, 1]
    assert deltas[1].tokens[-1].text == "y"


def test_earliest_of_several_stop_strings_wins():
    f, deltas = run(["one two three"], ["three", "two"])
    assert "".join(d.text for d in deltas) == "one "


def test_the_filter_names_the_stop_string_that_matched_first():
    f, _ = run(["a b", "c. d\n"], ["\n", "."])
    assert f.stopped and f.matched == "."
    f, _ = run(["abc"], ["x"])
    assert not f.stopped and f.matched is None
