"""Reading a request's JSON body: one UTF-8 JSON object, no NaN, bounded nesting.

Shared by the OpenAI routes (gateway/validate.py checks the fields after), worker
control and the hook events; a refusal is `Invalid`, answered as OpenAI does: 400 with
`{"error": {"message", "type", "param", "code"}}`, `param` naming the field.
"""

import json

from isense_slurm.http import errors

# Deeper bodies are refused: nothing OpenAI takes nests this deep, and a body that
# json.loads only just manages (about 1000 levels) could not be dumped again by the
# gateway (streams re-encode the body) without a RecursionError.
MAX_DEPTH = 100


class Invalid(Exception):
    """A refused body: a 400 with `message`, naming `param`."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_request"):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code

    def response(self):
        return errors.error_response(400, self.message, param=self.param, code=self.code)


def kind_of(value) -> str:
    """A JSON value's type in OpenAI's words: "null", "a boolean", "an integer", ..."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "a boolean"
    return {int: "an integer", float: "a number", str: "a string", list: "an array", dict: "an object"}.get(
        type(value), "a value"
    )


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


# NaN and Infinity are Python extensions, not JSON: refused like any other bad token.
_decode = json.JSONDecoder(parse_constant=_no_constant).decode


def parse(raw: bytes) -> dict:
    """The body as a dict; Invalid for anything but one UTF-8 JSON object."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as err:
        raise Invalid(f"the body is not UTF-8 text (byte {err.start})") from None
    try:
        body = _decode(text)
    except RecursionError:
        raise Invalid("the body's JSON is nested too deeply") from None
    except json.JSONDecodeError as err:
        raise Invalid(f"the body is not valid JSON ({err.msg}: line {err.lineno} column {err.colno})") from None
    except ValueError as err:  # NaN/Infinity, an integer of more than 4300 digits
        raise Invalid(f"the body is not valid JSON ({str(err).split(':')[0]})") from None
    if type(body) is not dict:
        raise Invalid(f"the body must be a JSON object, not {kind_of(body)}")
    # Deeper than MAX_DEPTH needs more than MAX_DEPTH opening brackets: one C pass (about
    # 0.7 ns a byte) spares the walk to nearly every body.
    if len(raw) > MAX_DEPTH and len(raw) - len(raw.translate(None, b"[{")) > MAX_DEPTH and _too_deep(body):
        raise Invalid(f"the body's JSON is nested more than {MAX_DEPTH} levels deep")
    return body


def _too_deep(body: dict) -> bool:
    stack: list[tuple[dict | list, int]] = [(body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False
