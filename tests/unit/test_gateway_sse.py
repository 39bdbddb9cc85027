"""SSE framing, stream accounting and continuation requests of the gateway's relay."""

import json

import pytest

from isense_slurm.gateway import sse
from isense_slurm.gateway.sse import SSEBuffer, StreamState, continuation_body, event_data
from isense_slurm.gateway.streaming import upstream_body


def chat_chunk(content=None, finish=None, role=None, index=0, usage=None):
    delta = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    chunk = {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        chunk["usage"] = usage
    return json.dumps(chunk).encode()


def cmpl_chunk(text, finish=None):
    return json.dumps({"id": "cmpl-x", "choices": [{"index": 0, "text": text, "finish_reason": finish}]}).encode()


def usage_chunk(prompt, completion):
    return json.dumps(
        {
            "id": "chatcmpl-x",
            "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
    ).encode()


STREAM = b'data: {"a":1}\n\ndata: {"b":2}\n\n: keep-alive\n\ndata: [DONE]\n\n'


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_sse_buffer_is_independent_of_read_boundaries(size):
    buffer = SSEBuffer()
    events = []
    for i in range(0, len(STREAM), size):
        events += buffer.feed(STREAM[i : i + size])
    assert events == [b'{"a":1}', b'{"b":2}', b"[DONE]"]


@pytest.mark.parametrize("size", [1, 2, 5])
def test_sse_buffer_accepts_crlf(size):
    stream = STREAM.replace(b"\n", b"\r\n")
    buffer = SSEBuffer()
    events = []
    for i in range(0, len(stream), size):
        events += buffer.feed(stream[i : i + size])
    assert events == [b'{"a":1}', b'{"b":2}', b"[DONE]"]


def test_event_data_joins_multiline_data():
    assert event_data(b"event: x\ndata: one\ndata:two") == b"one\ntwo"
    assert event_data(b": comment") is None


def test_upstream_body_forces_usage_and_remembers_the_client_choice():
    body, wanted = upstream_body({"model": "m", "stream": True})
    assert body["stream_options"] == {"include_usage": True} and not wanted
    body, wanted = upstream_body({"stream_options": {"include_usage": True, "continuous_usage_stats": False}})
    assert wanted and body["stream_options"]["continuous_usage_stats"] is False


def run(state, events):
    return [state.on_event(e) for e in events]


def test_a_normal_stream_is_relayed_as_is_and_billed_from_usage():
    state = StreamState(chat=True, client_usage=False)
    state.start_attempt(continuing=False)
    events = [
        chat_chunk("", role="assistant"),
        chat_chunk("Hi"),
        chat_chunk(" there", finish="length"),
        usage_chunk(5, 2),
        b"[DONE]",
    ]
    out = run(state, events)
    assert out[:3] == [b"data: " + e + b"\n\n" for e in events[:3]]
    assert out[3] is None  # the usage chunk is held back: the client did not ask
    assert out[4] is None  # [DONE] is sent by the gateway after the commit
    assert state.ok and state.totals() == (5, 2, 0)
    assert state.usage_event() is None
    assert state.response_id == "chatcmpl-x"


def test_usage_chunk_goes_to_a_client_that_asked():
    state = StreamState(chat=True, client_usage=True)
    state.start_attempt(continuing=False)
    run(state, [chat_chunk("Hi"), usage_chunk(5, 1), b"[DONE]"])
    assert json.loads(state.usage_event()[6:])["usage"]["completion_tokens"] == 1


def test_abort_is_hidden_and_counted_from_the_aborted_usage():
    state = StreamState(chat=True, client_usage=False)
    state.start_attempt(continuing=False)
    out = run(
        state,
        [
            chat_chunk("a"),
            chat_chunk("b", finish="abort"),
            chat_chunk("", finish="abort"),
            usage_chunk(5, 2),
            b"[DONE]",
        ],
    )
    relayed = json.loads(out[1][6:])
    assert relayed["choices"][0]["finish_reason"] is None
    assert relayed["choices"][0]["delta"]["content"] == "b"
    assert out[2] is None  # an empty abort chunk is dropped
    assert state.done and state.aborted and not state.ok
    state.attempt_failed()
    assert (state.prior_completion, state.first_prompt) == (2, 5)


def test_cut_attempt_counts_delivered_chunks():
    state = StreamState(chat=False, client_usage=False)
    state.start_attempt(continuing=False)
    run(state, [cmpl_chunk("x"), cmpl_chunk("y"), cmpl_chunk("")])
    state.attempt_failed()
    assert state.prior_completion == 2
    assert state.texts[0] == "xy"
    assert state.partial_totals(current_attempt=False) == (0, 2, 0)


def test_continued_stream_bills_prompt_once_and_all_delivered_tokens():
    state = StreamState(chat=True, client_usage=True)
    state.start_attempt(continuing=False)
    run(
        state,
        [
            chat_chunk("", role="assistant"),
            chat_chunk("a"),
            chat_chunk("b", finish="abort"),
            usage_chunk(7, 2),
            b"[DONE]",
        ],
    )
    state.attempt_failed()
    state.start_attempt(continuing=True)
    out = run(
        state,
        [
            chat_chunk("", role="assistant"),
            chat_chunk("c"),
            chat_chunk("d", finish="length"),
            usage_chunk(9, 2),
            b"[DONE]",
        ],
    )
    assert out[0] is None  # the second opener is not shown
    assert state.ok
    assert state.totals() == (7, 4, 0)
    assert json.loads(state.usage_event()[6:])["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 4,
        "total_tokens": 11,
    }


def test_continued_after_a_cut_without_usage_derives_the_prompt():
    state = StreamState(chat=False, client_usage=False)
    state.start_attempt(continuing=False)
    run(state, [cmpl_chunk("x"), cmpl_chunk("y")])
    state.attempt_failed()
    state.start_attempt(continuing=True)
    run(state, [cmpl_chunk("z", finish="length"), usage_chunk(12, 1), b"[DONE]"])
    assert state.totals() == (10, 3, 0)


def test_error_event_fails_the_attempt():
    state = StreamState(chat=True, client_usage=False)
    state.start_attempt(continuing=False)
    assert state.on_event(b'{"error": {"message": "boom"}}') is None
    assert state.error == "boom" and not state.ok


def test_completions_continuation_extends_prompt_and_shrinks_budget():
    state = StreamState(chat=False, client_usage=False)
    state.start_attempt(continuing=False)
    run(state, [cmpl_chunk(" the"), cmpl_chunk(" sea")])
    state.attempt_failed()
    body = {"model": "m", "prompt": "Tell me about", "max_tokens": 10, "min_tokens": 3, "stream": True}
    new = continuation_body(body, state, chat=False)
    assert new["prompt"] == "Tell me about the sea"
    assert (new["max_tokens"], new["min_tokens"]) == (8, 1)
    assert body["prompt"] == "Tell me about"  # the original is untouched


def test_completions_continuation_uses_vllm_default_budget():
    state = StreamState(chat=False, client_usage=False)
    state.start_attempt(continuing=False)
    run(state, [cmpl_chunk("a")] * 3)
    state.attempt_failed()
    assert continuation_body({"prompt": ["p"]}, state, chat=False)["max_tokens"] == 13


def test_chat_continuation_appends_the_partial_answer():
    state = StreamState(chat=True, client_usage=False)
    state.start_attempt(continuing=False)
    run(state, [chat_chunk("", role="assistant"), chat_chunk("Hel"), chat_chunk("lo")])
    state.attempt_failed()
    body = {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5}
    new = continuation_body(body, state, chat=True)
    assert new["messages"][-1] == {"role": "assistant", "content": "Hello"}
    assert new["continue_final_message"] is True and new["add_generation_prompt"] is False
    assert new["max_completion_tokens"] == 3
    assert len(body["messages"]) == 1


def test_chat_continuation_of_a_continued_message():
    state = StreamState(chat=True, client_usage=False)
    state.start_attempt(continuing=False)
    run(state, [chat_chunk("lo")])
    state.attempt_failed()
    body = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hel"}],
        "continue_final_message": True,
        "add_generation_prompt": False,
    }
    new = continuation_body(body, state, chat=True)
    assert new["messages"][-1]["content"] == "Hello" and len(new["messages"]) == 2


def test_nothing_delivered_resends_the_request():
    state = StreamState(chat=True, client_usage=False)
    state.start_attempt(continuing=False)
    run(state, [chat_chunk("", role="assistant")])
    state.attempt_failed()
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert continuation_body(body, state, chat=True) == body


@pytest.mark.parametrize(
    "body,events",
    [
        ({"n": 2, "messages": []}, [chat_chunk("a")]),
        ({"messages": []}, [chat_chunk("a", index=1)]),
        ({"messages": [], "max_tokens": 2}, [chat_chunk("a"), chat_chunk("b")]),
        (
            {"messages": [], "tools": []},
            [
                json.dumps(
                    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}}]}
                ).encode()
            ],
        ),
    ],
)
def test_streams_that_cannot_be_continued(body, events):
    state = StreamState(chat=True, client_usage=False)
    state.start_attempt(continuing=False)
    run(state, events)
    state.attempt_failed()
    assert continuation_body(body, state, chat=True) is None


def test_completions_with_echo_or_token_prompt_cannot_be_continued():
    state = StreamState(chat=False, client_usage=False)
    state.start_attempt(continuing=False)
    run(state, [cmpl_chunk("a")])
    state.attempt_failed()
    assert continuation_body({"prompt": "p", "echo": True}, state, chat=False) is None
    assert continuation_body({"prompt": [1, 2, 3]}, state, chat=False) is None


def test_running_usage_reaches_only_a_client_that_asked_for_it():
    chunk = json.loads(cmpl_chunk("x"))
    chunk["usage"] = {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}
    for asked, running, shown in [(False, False, False), (True, False, False), (True, True, True)]:
        state = StreamState(chat=False, client_usage=asked, client_running_usage=running)
        state.start_attempt(continuing=False)
        out = json.loads(state.on_event(json.dumps(chunk).encode())[6:])
        assert ("usage" in out) is shown, (asked, running)
        assert state.usage == chunk["usage"]  # billed from it all the same


def test_continuation_shows_running_usage_of_the_whole_stream():
    state = StreamState(chat=False, client_usage=True, client_running_usage=True)
    state.start_attempt(continuing=False)
    run(state, [cmpl_chunk("x"), cmpl_chunk("y")])  # cut without usage
    state.attempt_failed()
    state.start_attempt(continuing=True)
    chunk = json.loads(cmpl_chunk("", finish="length"))
    chunk["usage"] = {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}
    out = state.on_event(json.dumps(chunk).encode())
    shown = json.loads(out[6:])
    assert shown["choices"][0]["finish_reason"] == "length"  # kept though it has no text
    assert shown["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}


def test_a_failed_continuation_books_the_prompt_without_the_delivered_text():
    state = StreamState(chat=False, client_usage=False)
    state.start_attempt(continuing=False)
    run(state, [cmpl_chunk("x")])
    state.attempt_failed()
    state.start_attempt(continuing=True)
    run(state, [cmpl_chunk("y", finish="abort"), usage_chunk(11, 1), b"[DONE]"])
    state.attempt_failed()
    assert (state.first_prompt, state.prior_completion) == (10, 2)


def test_done_without_a_finish_reason_is_not_a_finished_stream():
    """vLLM drops queued requests on shutdown with just usage and [DONE]."""
    state = StreamState(chat=False, client_usage=False)
    state.start_attempt(continuing=False)
    run(state, [usage_chunk(4, 0), b"[DONE]"])
    assert state.done and not state.ok
    state.start_attempt(continuing=False)
    run(state, [cmpl_chunk("a"), usage_chunk(4, 1), b"[DONE]"])
    assert not state.ok  # a choice started but never finished


def test_non_streamed_answer_is_finished_only_when_every_choice_is():
    from isense_slurm.gateway.proxy import finished

    assert finished({"choices": [{"finish_reason": "length"}, {"finish_reason": "stop"}]})
    assert not finished({"choices": [{"finish_reason": "length"}, {"finish_reason": "abort"}]})
    assert not finished({"choices": [{"finish_reason": None}]})
    assert not finished({"choices": []})


# --- without_null_usage: the usual chunk's `"usage":null` cut from its bytes ------------------


@pytest.mark.parametrize(
    "data",
    [
        b'{"id":"c1","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}',
        b'{"usage":null,"id":"c1","choices":[{"index":0,"delta":{"content":"hi"}}]}',
        b'{"id":"c1","choices":[{"index":0,"delta":{"content":"say \\"usage\\":null, ok"}}],"usage":null}',
    ],
)
def test_a_null_usage_member_is_cut_and_the_rest_is_the_same_json(data):
    cut = sse.without_null_usage(data)
    assert cut is not None
    expected = json.loads(data)
    del expected["usage"]
    assert json.loads(cut) == expected


@pytest.mark.parametrize(
    "data",
    [
        b'{"id":"c1","choices":[],"usage":{"prompt_tokens":3}}',  # not null: kept for the caller
        b'{"id":"c1","choices":[{"index":0,"usage":null}],"usage":null}',  # two: no cut
        b'{"id":"c1","choices":[{"index":0,"delta":{"content":"x\\"usage"}}],"usage":null}',
        b'{"id":"c1", "usage": null}',  # spaced: not vLLM's shape
    ],
)
def test_chunks_that_are_not_plain_are_left_to_the_json_path(data):
    assert sse.without_null_usage(data) is None


def test_a_client_without_usage_gets_chunks_without_the_usage_member():
    state = sse.StreamState(chat=True, client_usage=False, client_running_usage=False)
    state.start_attempt(continuing=False)
    out = state.on_event(b'{"id":"c1","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}')
    assert out is not None and out.startswith(b"data: ") and out.endswith(b"\n\n")
    assert json.loads(out[6:]) == {"id": "c1", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
    assert state.attempt_tokens == 1
