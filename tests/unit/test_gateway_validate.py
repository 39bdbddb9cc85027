"""The OpenAI routes' body checks (gateway/validate.py): what passes, what is refused,
and with which param and code."""

import json

import pytest

from isense_slurm.gateway import validate
from isense_slurm.gateway.validate import Invalid, request_body
from isense_slurm.http.body import MAX_DEPTH

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "m", "prompt": "The sea is"}


def refusal(body, chat=True, raw=None) -> Invalid:
    with pytest.raises(Invalid) as caught:
        request_body(raw if raw is not None else json.dumps(body).encode(), chat=chat)
    return caught.value


def ok(body, chat=True) -> dict:
    return request_body(json.dumps(body).encode(), chat=chat)


# --- what passes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"stream": False},
        {"stream": None},
        {"stream": True, "stream_options": None},
        {"max_tokens": 1},
        {"max_tokens": None},
        {"max_completion_tokens": 16},
        {"n": 1},
        {"n": 128},
        {"temperature": 0},
        {"temperature": 2},
        {"temperature": 0.7},
        {"top_p": 1},
        {"presence_penalty": -2},
        {"frequency_penalty": 1.5},
        {"seed": -5},
        {"seed": 2**63 - 1},
        {"stop": "\n"},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"stop": None},
        {"user": "u-1"},
        {"logit_bias": {"50256": -100, "11": 5.5}},
        {"logprobs": True, "top_logprobs": 20},
        {
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "tool_choice": "auto",
            "parallel_tool_calls": False,
        },
        {"tool_choice": {"type": "function", "function": {"name": "f"}}},
        {"response_format": {"type": "json_object"}},
        # vLLM's extensions and anything unknown pass through untouched
        {"ignore_eos": True, "top_k": 5, "min_tokens": 3, "x-anything": [1, {"a": None}]},
    ],
)
def test_chat_bodies_that_pass(extra):
    body = {**CHAT, **extra}
    assert ok(body) == body


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:..."}}],
            }
        ],
        [
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
            {"role": "tool", "content": "42", "tool_call_id": "c1"},
        ],
        [{"role": "assistant"}],
        [{"role": "developer", "content": "x", "name": "dev"}],
        [{"role": "my-custom-role", "content": "vLLM takes custom roles"}],
    ],
)
def test_messages_that_pass(messages):
    ok({"model": "m", "messages": messages})


@pytest.mark.parametrize("prompt", ["", "x", ["a", "b"], [1, 2, 3], [[1, 2], [3]], [0]])
def test_prompts_that_pass(prompt):
    ok({"model": "m", "prompt": prompt}, chat=False)


def test_completion_fields_that_pass():
    ok(
        {
            **COMPLETION,
            "logprobs": 5,
            "echo": True,
            "best_of": 2,
            "suffix": None,
            "stream": True,
            "stream_options": {"include_usage": False, "continuous_usage_stats": True},
        },
        chat=False,
    )
    ok({"model": "m", "prompt_embeds": "base64..."}, chat=False)  # vLLM's alternative to prompt


def test_nesting_up_to_the_limit_passes():
    deep = 1
    for _ in range(MAX_DEPTH - 2):
        deep = [deep]
    ok({**CHAT, "x": deep})


# --- what is refused, with param and code ---------------------------------------------


@pytest.mark.parametrize(
    "field,value,param,code",
    [
        ("stream", "yes", "stream", "invalid_type"),
        ("stream", 1, "stream", "invalid_type"),
        ("stream", 0, "stream", "invalid_type"),
        ("stream_options", "x", "stream_options", "invalid_type"),
        ("max_tokens", 0, "max_tokens", "integer_below_min_value"),
        ("max_tokens", -1, "max_tokens", "integer_below_min_value"),
        ("max_tokens", 1.5, "max_tokens", "invalid_type"),
        ("max_tokens", True, "max_tokens", "invalid_type"),
        ("max_tokens", "10", "max_tokens", "invalid_type"),
        ("max_tokens", 10**30, "max_tokens", "integer_above_max_value"),
        ("max_completion_tokens", 0, "max_completion_tokens", "integer_below_min_value"),
        ("n", 0, "n", "integer_below_min_value"),
        ("n", 129, "n", "integer_above_max_value"),
        ("n", 2.0, "n", "invalid_type"),
        ("temperature", -0.1, "temperature", "decimal_below_min_value"),
        ("temperature", 2.01, "temperature", "decimal_above_max_value"),
        ("temperature", "hot", "temperature", "invalid_type"),
        ("temperature", False, "temperature", "invalid_type"),
        ("top_p", 1.5, "top_p", "decimal_above_max_value"),
        ("presence_penalty", -3, "presence_penalty", "decimal_below_min_value"),
        ("frequency_penalty", [1], "frequency_penalty", "invalid_type"),
        ("seed", 2**63, "seed", "integer_above_max_value"),
        ("stop", 5, "stop", "invalid_type"),
        ("stop", ["a", 1], "stop[1]", "invalid_type"),
        ("user", 5, "user", "invalid_type"),
        ("logit_bias", [1], "logit_bias", "invalid_type"),
        ("logit_bias", {"11": 101}, "logit_bias.11", "decimal_above_max_value"),
        ("logit_bias", {"11": "x"}, "logit_bias.11", "invalid_type"),
        ("logprobs", 3, "logprobs", "invalid_type"),
        ("top_logprobs", 21, "top_logprobs", "integer_above_max_value"),
        ("tools", {"type": "function"}, "tools", "invalid_type"),
        ("tools", [None], "tools[0]", "invalid_type"),
        ("tools", [{"function": {}}], "tools[0].type", "invalid_type"),
        ("tool_choice", 1, "tool_choice", "invalid_type"),
        ("parallel_tool_calls", "no", "parallel_tool_calls", "invalid_type"),
        ("response_format", "json", "response_format", "invalid_type"),
        ("model", 5, "model", "invalid_type"),
        ("model", ["m"], "model", "invalid_type"),
        ("model", "", "model", "invalid_value"),
        ("model", None, "model", "missing_required_parameter"),
        ("messages", None, "messages", "invalid_type"),
        ("messages", "hi", "messages", "invalid_type"),
        ("messages", [], "messages", "empty_array"),
        ("messages", ["hi"], "messages[0]", "invalid_type"),
        ("messages", [{"content": "hi"}], "messages[0].role", "missing_required_parameter"),
        ("messages", [{"role": 1, "content": "hi"}], "messages[0].role", "invalid_type"),
        ("messages", [{"role": "user"}], "messages[0].content", "missing_required_parameter"),
        ("messages", [{"role": "user", "content": None}], "messages[0].content", "invalid_type"),
        ("messages", [{"role": "user", "content": 5}], "messages[0].content", "invalid_type"),
        ("messages", [{"role": "user", "content": []}], "messages[0].content", "empty_array"),
        ("messages", [{"role": "user", "content": ["hi"]}], "messages[0].content[0]", "invalid_type"),
        (
            "messages",
            [{"role": "user", "content": [{"text": "hi"}]}],
            "messages[0].content[0].type",
            "missing_required_parameter",
        ),
        (
            "messages",
            [{"role": "user", "content": [{"type": "text", "text": 5}]}],
            "messages[0].content[0].text",
            "invalid_type",
        ),
        (
            "messages",
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b", "name": 5}],
            "messages[1].name",
            "invalid_type",
        ),
        (
            "messages",
            [{"role": "assistant", "content": "a", "tool_calls": {}}],
            "messages[0].tool_calls",
            "invalid_type",
        ),
        ("messages", [{"role": "tool", "content": "a", "tool_call_id": 5}], "messages[0].tool_call_id", "invalid_type"),
    ],
)
def test_chat_refusals(field, value, param, code):
    err = refusal({**CHAT, field: value})
    assert (err.param, err.code) == (param, code), err.message
    assert f"'{param}'" in err.message


def test_huge_numbers():
    # json reads 1e400 as inf: refused by the range, not forwarded
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e400}'
    assert refusal(None, raw=raw).code == "decimal_above_max_value"
    raw = raw.replace(b"1e400", b"-1e400")
    assert refusal(None, raw=raw).code == "decimal_below_min_value"
    ok({**CHAT, "top_p": 1e-400})  # 0.0


def test_missing_fields():
    assert refusal({"messages": CHAT["messages"]}).param == "model"
    assert refusal({"model": "m"}).param == "messages"
    assert refusal({"model": "m"}, chat=False).param == "prompt"
    assert refusal({"model": "m", "prompt": None}, chat=False).param == "prompt"


def test_stream_options_need_stream():
    for stream in (False, None, "absent"):
        body = {**CHAT, "stream_options": {"include_usage": True}}
        if stream != "absent":
            body["stream"] = stream
        err = refusal(body)
        assert (err.param, err.code) == ("stream_options", "invalid_value")
    err = refusal({**CHAT, "stream": True, "stream_options": {"include_usage": "yes"}})
    assert err.param == "stream_options.include_usage"


@pytest.mark.parametrize(
    "prompt,param,code",
    [
        (None, "prompt", "missing_required_parameter"),
        (5, "prompt", "invalid_type"),
        ({"a": 1}, "prompt", "invalid_type"),
        ([], "prompt", "empty_array"),
        ([1.5], "prompt", "invalid_type"),
        (["a", 1], "prompt[1]", "invalid_type"),
        ([1, "a"], "prompt[1]", "invalid_type"),
        ([1, True], "prompt[1]", "invalid_type"),
        ([1, -1], "prompt[1]", "integer_below_min_value"),
        ([1, 2**64], "prompt[1]", "integer_above_max_value"),
        ([[1], 2], "prompt[1]", "invalid_type"),
        ([[1], []], "prompt[1]", "empty_array"),
        ([[1], [2, "x"]], "prompt[1][1]", "invalid_type"),
        ([None], "prompt", "invalid_type"),
    ],
)
def test_prompt_refusals(prompt, param, code):
    err = refusal({"model": "m", "prompt": prompt}, chat=False)
    assert (err.param, err.code) == (param, code), err.message


def test_completion_only_fields():
    assert refusal({**COMPLETION, "logprobs": True}, chat=False).param == "logprobs"
    assert refusal({**COMPLETION, "logprobs": -1}, chat=False).code == "integer_below_min_value"
    assert refusal({**COMPLETION, "echo": "no"}, chat=False).param == "echo"
    assert refusal({**COMPLETION, "best_of": 0}, chat=False).param == "best_of"
    assert refusal({**COMPLETION, "suffix": 1}, chat=False).param == "suffix"
    # a chat field on the completions route is not checked (and the reverse)
    ok({**COMPLETION, "messages": 5}, chat=False)
    ok({**CHAT, "prompt": 5})


@pytest.mark.parametrize(
    "raw,says",
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"{}x", "not valid JSON"),
        (b"[1]", "must be a JSON object, not an array"),
        (b"null", "must be a JSON object, not null"),
        (b'"s"', "must be a JSON object, not a string"),
        (b'{"model": NaN}', "NaN is not a JSON value"),
        (b'{"temperature": Infinity}', "Infinity is not a JSON value"),
        (b'{"temperature": -Infinity}', "-Infinity is not a JSON value"),
        (b'{"n": ' + b"9" * 5000 + b"}", "not valid JSON (Exceeds the limit"),
        (b'{"model": "\xff"}', "not UTF-8 text (byte 11)"),
        ('{"model": "m"}'.encode("utf-16"), "not UTF-8"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),  # a UTF-8 BOM
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply"),
        (b'{"a":' + b"[" * 200 + b"]" * 200 + b"}", f"nested more than {MAX_DEPTH} levels"),
    ],
)
def test_unreadable_bodies(raw, says):
    err = refusal(None, raw=raw)
    assert says in err.message
    assert err.param is None


def test_invalid_response_is_an_openai_400():
    resp = refusal({**CHAT, "stream": "yes"}).response()
    assert resp.status == 400
    assert json.loads(resp.body) == {
        "error": {
            "message": "Invalid type for 'stream': expected a boolean, but got a string instead.",
            "type": "invalid_request_error",
            "param": "stream",
            "code": "invalid_type",
        }
    }


def test_long_values_are_cut_in_messages():
    assert len(validate.shown("x" * 10_000)) == validate.SHOWN + 3
    err = refusal({**CHAT, "max_tokens": 10**1000})
    assert len(err.message) < 300
