"""The OpenAI routes' request bodies, checked before anything is forwarded.

`request_body(raw, chat=...)` reads the client's bytes (http/body.py: UTF-8 JSON, one
object) and checks the fields the gateway reads or that change what is served, with
OpenAI's types and limits; a refusal is `Invalid`, answered as OpenAI does: 400 with
`{"error": {"message", "type", "param", "code"}}`, `param` naming the field. Fields it
does not know pass through untouched (vLLM's extensions: ignore_eos, top_k, ...).

Deliberately left to vLLM: values only the model knows (max_tokens against the context
length, logprobs against --max-logprobs), the role names (vLLM accepts custom roles),
and the number of stop strings (OpenAI caps it at 4, vLLM does not).

Cost: a few microseconds for an ordinary body (one pass over its top-level keys, one
over its messages); bench/validate.py measures it.
"""

from isense_slurm.http.body import Invalid, kind_of, parse

INT64 = (-(2**63), 2**63 - 1)
SHOWN = 80  # characters of a client's value quoted back in a message

MISSING = object()


def shown(value) -> str:
    """A client's string as quoted back in a message: at most SHOWN characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


# --- messages in OpenAI's words -----------------------------------------------------


def _type_error(param: str, expected: str, value) -> Invalid:
    return Invalid(
        f"Invalid type for '{param}': expected {expected}, but got {kind_of(value)} instead.", param, "invalid_type"
    )


def _below(param: str, kind: str, lo, value) -> Invalid:
    return Invalid(
        f"Invalid '{param}': {kind} below minimum value. Expected a value >= {lo}, but got {shown(value)} instead.",
        param,
        f"{kind}_below_min_value",
    )


def _above(param: str, kind: str, hi, value) -> Invalid:
    return Invalid(
        f"Invalid '{param}': {kind} above maximum value. Expected a value <= {hi}, but got {shown(value)} instead.",
        param,
        f"{kind}_above_max_value",
    )


def _missing(param: str) -> Invalid:
    return Invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _empty(param: str) -> Invalid:
    return Invalid(
        f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        param,
        "empty_array",
    )


# --- field checkers: (value, param) -> None, or raise Invalid -----------------------
# JSON gives exact types, so `type(v) is int` is both the fastest test and the one that
# refuses booleans (bool is an int subclass in Python).


def boolean(value, param: str) -> None:
    if value is not None and value is not True and value is not False:
        raise _type_error(param, "a boolean", value)


def string(value, param: str) -> None:
    if value is not None and type(value) is not str:
        raise _type_error(param, "a string", value)


def integer(lo: int = INT64[0], hi: int = INT64[1]):
    def check(value, param: str) -> None:
        if value is None:
            return
        if type(value) is not int:
            raise _type_error(param, "an integer", value)
        if value < lo:
            raise _below(param, "integer", lo, value)
        if value > hi:
            raise _above(param, "integer", hi, value)

    return check


def number(lo: float, hi: float):
    def check(value, param: str) -> None:
        if value is None:
            return
        kind = type(value)
        if kind is not float and kind is not int:
            raise _type_error(param, "a number", value)
        if not value >= lo:  # also NaN (not that json gives one: see parse)
            raise _below(param, "decimal", lo, value)
        if value > hi:
            raise _above(param, "decimal", hi, value)

    return check


def obj(value, param: str) -> None:
    if value is not None and type(value) is not dict:
        raise _type_error(param, "an object", value)


def typed_object(value, param: str) -> None:
    """An object with a string "type" (response_format)."""
    if value is None:
        return
    if type(value) is not dict:
        raise _type_error(param, "an object", value)
    if type(value.get("type")) is not str:
        raise _type_error(f"{param}.type", "a string", value.get("type"))


def typed_objects(value, param: str) -> None:
    """An array of objects, each with a string "type" (tools)."""
    if value is None:
        return
    if type(value) is not list:
        raise _type_error(param, "an array", value)
    for i, item in enumerate(value):
        if item is None:
            raise _type_error(f"{param}[{i}]", "an object", item)
        typed_object(item, f"{param}[{i}]")


def string_or_object(value, param: str) -> None:
    if value is not None and type(value) is not str and type(value) is not dict:
        raise _type_error(param, "a string or an object", value)


def stop(value, param: str) -> None:
    if value is None or type(value) is str:
        return
    if type(value) is not list:
        raise _type_error(param, "a string or an array of strings", value)
    for i, item in enumerate(value):
        if type(item) is not str:
            raise _type_error(f"{param}[{i}]", "a string", item)


def logit_bias(value, param: str) -> None:
    if value is None:
        return
    if type(value) is not dict:
        raise _type_error(param, "an object", value)
    for token, weight in value.items():
        _bias(weight, f"{param}.{shown(token)}")


_bias = number(-100, 100)


def stream_options(value, param: str) -> None:
    if value is None:
        return
    if type(value) is not dict:
        raise _type_error(param, "an object", value)
    for name in ("include_usage", "continuous_usage_stats"):  # the second is vLLM's
        if name in value:
            boolean(value[name], f"{param}.{name}")


# Roles whose messages may carry no content (an assistant's tool calls, a legacy
# function message); every other role needs a string or an array of parts.
CONTENT_OPTIONAL = frozenset(("assistant", "function"))


def messages(value, param: str) -> None:
    if type(value) is not list:
        raise _type_error(param, "an array", value)
    if not value:
        raise _empty(param)
    for i, message in enumerate(value):
        if type(message) is not dict:
            raise _type_error(f"{param}[{i}]", "an object", message)
        role = message.get("role", MISSING)
        if type(role) is not str:
            if role is MISSING:
                raise _missing(f"{param}[{i}].role")
            raise _type_error(f"{param}[{i}].role", "a string", role)
        content = message.get("content")
        if type(content) is str:
            pass
        elif type(content) is list:
            _content_parts(content, f"{param}[{i}].content")
        elif content is None:
            if role not in CONTENT_OPTIONAL:
                if "content" not in message:
                    raise _missing(f"{param}[{i}].content")
                raise _type_error(f"{param}[{i}].content", "a string or an array of objects", content)
        else:
            raise _type_error(f"{param}[{i}].content", "a string or an array of objects", content)
        if len(message) > 2:  # the optional fields, when there are any
            name = message.get("name")
            if name is not None and type(name) is not str:
                raise _type_error(f"{param}[{i}].name", "a string", name)
            calls = message.get("tool_calls")
            if calls is not None and type(calls) is not list:
                raise _type_error(f"{param}[{i}].tool_calls", "an array", calls)
            call_id = message.get("tool_call_id")
            if call_id is not None and type(call_id) is not str:
                raise _type_error(f"{param}[{i}].tool_call_id", "a string", call_id)


def _content_parts(parts: list, param: str) -> None:
    if not parts:
        raise _empty(param)
    for j, part in enumerate(parts):
        if type(part) is not dict:
            raise _type_error(f"{param}[{j}]", "an object", part)
        kind = part.get("type")
        if type(kind) is not str:
            if kind is None and "type" not in part:
                raise _missing(f"{param}[{j}].type")
            raise _type_error(f"{param}[{j}].type", "a string", kind)
        if kind == "text" and type(part.get("text")) is not str:
            raise _type_error(f"{param}[{j}].text", "a string", part.get("text"))


_PROMPT_TYPES = "a string, an array of strings, an array of integers or an array of arrays of integers"


def prompt(value, param: str) -> None:
    if type(value) is str or value is None:  # None: vLLM's prompt_embeds instead
        return
    if type(value) is not list:
        raise _type_error(param, _PROMPT_TYPES, value)
    if not value:
        raise _empty(param)
    first = type(value[0])
    if first is str:
        for i, item in enumerate(value):
            if type(item) is not str:
                raise _type_error(f"{param}[{i}]", "a string", item)
    elif first is int:
        _token_ids(value, param)
    elif first is list:
        for i, item in enumerate(value):
            if type(item) is not list:
                raise _type_error(f"{param}[{i}]", "an array of integers", item)
            if not item:
                raise _empty(f"{param}[{i}]")
            _token_ids(item, f"{param}[{i}]")
    else:
        raise _type_error(param, _PROMPT_TYPES, value)


def _token_ids(ids: list, param: str) -> None:
    # C-speed for the common case (a few thousand ids): one set of types, then min/max.
    if set(map(type, ids)) != {int}:
        i, item = next((i, x) for i, x in enumerate(ids) if type(x) is not int)
        raise _type_error(f"{param}[{i}]", "an integer", item)
    low, high = min(ids), max(ids)
    if low < 0:
        raise _below(f"{param}[{ids.index(low)}]", "integer", 0, low)
    if high > INT64[1]:
        raise _above(f"{param}[{ids.index(high)}]", "integer", INT64[1], high)


# --- the tables ---------------------------------------------------------------------

COMMON = {
    "model": string,  # required and non-empty: checked in request_body
    "stream": boolean,
    "stream_options": stream_options,
    "max_tokens": integer(1),
    "n": integer(1, 128),
    "temperature": number(0, 2),
    "top_p": number(0, 1),
    "presence_penalty": number(-2, 2),
    "frequency_penalty": number(-2, 2),
    "seed": integer(),
    "stop": stop,
    "user": string,
    "logit_bias": logit_bias,
}

CHAT = {
    **COMMON,
    "messages": messages,
    "max_completion_tokens": integer(1),
    "logprobs": boolean,
    "top_logprobs": integer(0, 20),
    "tools": typed_objects,
    "tool_choice": string_or_object,
    "parallel_tool_calls": boolean,
    "response_format": typed_object,
}

COMPLETIONS = {
    **COMMON,
    "prompt": prompt,
    "logprobs": integer(0),  # OpenAI allows up to 5, vLLM up to its --max-logprobs
    "echo": boolean,
    "best_of": integer(1),
    "suffix": string,
}


def check(body: dict, *, chat: bool) -> None:
    """Raise Invalid for the first field that OpenAI would refuse."""
    table = CHAT if chat else COMPLETIONS
    for name, value in body.items():
        checker = table.get(name)
        if checker is not None:
            checker(value, name)
    model = body.get("model")
    if not model:  # a wrong type was refused above
        if model is None:
            raise _missing("model")
        raise Invalid("Invalid 'model': expected a non-empty string.", "model", "invalid_value")
    if chat:
        if "messages" not in body:
            raise _missing("messages")
    elif body.get("prompt") is None and body.get("prompt_embeds") is None:  # prompt_embeds: vLLM's
        raise _missing("prompt")
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise Invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            "invalid_value",
        )


def request_body(raw: bytes, *, chat: bool) -> dict:
    """The checked body of a /v1/chat/completions (chat) or /v1/completions request."""
    body = parse(raw)
    check(body, chat=chat)
    return body
