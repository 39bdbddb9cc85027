"""Pure helpers of the SSE relay: event framing, per-stream accounting, continuation.

Token counting of a stream (what the ledger bills):
- a stream that ends normally: the `usage` of its final chunk (the gateway always asks
  vLLM for it with `stream_options.include_usage`);
- an attempt that vLLM ended with finish_reason "abort" (SIGTERM): that attempt's own
  usage chunk, which vLLM still sends, so the count is exact;
- an attempt cut without usage (connection lost): one token per delivered chunk that
  carries text (vLLM sends one chunk per generated token at the default stream
  interval), an estimate documented as such; or the running usage when the client asked
  for `continuous_usage_stats`.
A continued stream bills the prompt once (the first attempt's prompt tokens) and the
completion tokens of every attempt as delivered to the client.
"""

import json

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"

# vLLM's default max_tokens of /v1/completions (chat has none: the context decides).
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


def event(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


# How vLLM writes the `"usage": null` that include_usage puts in every chunk.
_NULL_USAGE = (b',"usage":null', b'"usage":null,')


def without_null_usage(data: bytes) -> bytes | None:
    """A chunk's JSON without its one `"usage":null` member, cut out of the bytes; None
    when the bytes are not that plain (then the caller re-encodes the parsed chunk).
    Safe on bytes alone: a quote inside a JSON string is always escaped, so `,"usage"`
    with a bare quote is a key, and a second `"usage"` anywhere means no cut."""
    if data.count(b'"usage"') != 1:
        return None
    for member in _NULL_USAGE:
        if member in data:
            return data.replace(member, b"", 1)
    return None


def event_data(raw: bytes) -> bytes | None:
    """The data of one SSE event (lines joined), or None for comments/keep-alives."""
    if raw.startswith(b"data: ") and b"\n" not in raw:
        return raw[6:]
    lines = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines) if lines else None


class SSEBuffer:
    """Splits a byte stream into SSE event payloads, whatever the read boundaries."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._pending + chunk if self._pending else chunk
        tail = b""
        if b"\r" in data:  # CRLF or CR line ends; a CR at the end may start a CRLF
            if data.endswith(b"\r"):
                data, tail = data[:-1], b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        parts = data.split(b"\n\n")
        self._pending = parts.pop() + tail
        out = []
        for part in parts:
            payload = event_data(part)
            if payload is not None:
                out.append(payload)
        return out


class StreamState:
    """What one client stream has received so far, across attempts on several workers."""

    def __init__(self, *, chat: bool, client_usage: bool, client_running_usage: bool = False) -> None:
        self.chat = chat
        self.client_usage = client_usage
        # vLLM started with --enable-force-include-usage puts the running usage in every
        # chunk (exact billing of a cut attempt); a client sees it only if it asked for
        # `stream_options.continuous_usage_stats`, as OpenAI-compatible servers do.
        self.client_running_usage = client_running_usage
        self.texts: dict[int, str] = {}
        self.continuable = True
        self.response_id: str | None = None
        # Over all failed attempts.
        self.prior_completion = 0
        self.first_prompt: int | None = None
        self.first_cached = 0
        self.continued = False
        # This attempt.
        self.attempt_tokens = 0
        self.usage: dict | None = None
        self.usage_chunk: dict | None = None
        self.done = False
        self.aborted = False
        self.error: str | None = None
        self.seen: set[int] = set()  # choice indices this attempt sent
        self.finished: set[int] = set()  # ... and those that got a finish_reason
        self._skip_role = False

    # --- attempts ---------------------------------------------------------------

    def start_attempt(self, *, continuing: bool) -> None:
        self.attempt_tokens = 0
        self.usage = self.usage_chunk = None
        self.done = self.aborted = False
        self.error = None
        self.seen, self.finished = set(), set()
        self._skip_role = continuing
        self.continued = self.continued or continuing

    def attempt_failed(self) -> None:
        """Book what the failed attempt delivered before the next one starts."""
        if self.usage is not None:
            prompt, completion, cached = _tokens(self.usage)
            if self.first_prompt is None:  # a continuation's prompt holds the text so far
                self.first_prompt = max(0, prompt - self.prior_completion) if self.continued else prompt
                self.first_cached = min(cached, self.first_prompt)
            self.prior_completion += completion
        else:
            self.prior_completion += self.attempt_tokens

    @property
    def ok(self) -> bool:
        """[DONE] came and every choice finished: a request vLLM dropped from its queue
        on shutdown may end with [DONE] and no finish_reason at all."""
        return (
            self.done and not self.aborted and self.error is None and bool(self.finished) and self.finished >= self.seen
        )

    # --- events -----------------------------------------------------------------

    def on_event(self, data: bytes) -> bytes | None:
        """Account one upstream event; return the bytes to send the client, or None."""
        if data == DONE:
            self.done = True  # our own [DONE] goes out once the row is committed
            return None
        try:
            chunk = json.loads(data)
        except ValueError:
            return event(data)
        if not isinstance(chunk, dict):
            return event(data)
        if "error" in chunk or chunk.get("object") == "error":
            err = chunk.get("error")
            message = err.get("message") if isinstance(err, dict) else None
            self.error = message or chunk.get("message") or "error event"
            return None
        if self.response_id is None:
            self.response_id = chunk.get("id")
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        choices = chunk.get("choices")
        if not choices:
            if usage is not None:
                self.usage_chunk = chunk  # held: sent (maybe adjusted) before [DONE]
                return None
            return event(data)
        carries_text, stripped_abort = self._on_choices(choices)
        changed = stripped_abort
        if self._skip_role:
            self._skip_role = False
            if self.chat and not carries_text and not any(c.get("finish_reason") for c in choices):
                return None  # the second attempt's "role: assistant" opener
        if "usage" in chunk and not self.client_running_usage:
            if usage is None and not stripped_abort:
                trimmed = without_null_usage(data)
                if trimmed is not None:  # the usual chunk: cut its bytes, no re-encoding
                    return event(trimmed)
            del chunk["usage"]
            changed = True
        elif usage and self.continued:  # running usage of a continuation: show the stream's totals
            chunk["usage"] = self._usage_dict(*self._continued_totals(usage))
            changed = True
        if stripped_abort and not carries_text:
            return None  # nothing left to show
        if changed:
            return event(json.dumps(chunk, separators=(",", ":")).encode())
        return event(data)

    def _on_choices(self, choices: list) -> tuple[bool, bool]:
        """Account a chunk's choices: (whether one carries text, whether an abort was
        stripped from one)."""
        carries_text = stripped_abort = False
        for choice in choices:
            index = choice.get("index", 0)
            self.seen.add(index)
            if index != 0:
                self.continuable = False
            if self.chat:
                delta = choice.get("delta") or {}
                piece = delta.get("content")
                if delta.get("tool_calls") or delta.get("reasoning_content") or delta.get("reasoning"):
                    self.continuable = False
                    piece = piece or " "  # counts as a delivered token
                    carries_text = True
            else:
                piece = choice.get("text")
            if piece:
                carries_text = True
                self.attempt_tokens += 1
                self.texts[index] = self.texts.get(index, "") + piece
            finish = choice.get("finish_reason")
            if finish == "abort":
                # Never show the client an abort we are about to repair.
                self.aborted = True
                choice["finish_reason"] = None
                stripped_abort = True
            elif finish:
                self.finished.add(index)
        return carries_text, stripped_abort

    # --- totals -------------------------------------------------------------------

    def totals(self) -> tuple[int, int, int]:
        """(prompt, completion, cached) tokens the client received in a finished stream."""
        if self.usage is None:
            return self.first_prompt or 0, self.prior_completion + self.attempt_tokens, self.first_cached
        if not self.continued:
            return _tokens(self.usage)
        return self._continued_totals(self.usage)

    def _continued_totals(self, usage: dict) -> tuple[int, int, int]:
        prompt, completion, cached = _tokens(usage)
        if self.first_prompt is not None:
            prompt, cached = self.first_prompt, self.first_cached
        else:  # the continuation's prompt holds the text delivered so far
            prompt = max(0, prompt - self.prior_completion)
            cached = min(cached, prompt)
        return prompt, self.prior_completion + completion, cached

    @staticmethod
    def _usage_dict(prompt: int, completion: int, cached: int) -> dict:
        usage: dict[str, object] = {
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "completion_tokens": completion,
        }
        if cached:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        return usage

    def partial_totals(self, *, current_attempt: bool) -> tuple[int, int, int]:
        """Tokens of a stream cut short; `current_attempt`: the last attempt not yet booked."""
        completion = self.prior_completion
        if current_attempt:
            completion += int(self.usage.get("completion_tokens") or 0) if self.usage else self.attempt_tokens
        prompt = self.first_prompt
        if prompt is None and self.usage is not None:
            prompt = int(self.usage.get("prompt_tokens") or 0)
        return prompt or 0, completion, self.first_cached

    def usage_event(self) -> bytes | None:
        """The final usage chunk for a client that asked for it, with the totals billed."""
        if not self.client_usage or self.usage_chunk is None:
            return None
        if self.continued:
            self.usage_chunk["usage"] = self._usage_dict(*self.totals())
        return event(json.dumps(self.usage_chunk, separators=(",", ":")).encode())


def _tokens(usage: dict) -> tuple[int, int, int]:
    details = usage.get("prompt_tokens_details") or {}
    return (
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        int(details.get("cached_tokens") or 0),
    )


def continuation_body(body: dict, state: StreamState, *, chat: bool) -> dict | None:
    """The request that lets another worker finish a stream, or None when it cannot.

    Completions: the prompt plus the text so far. Chat: the partial answer appended as
    an assistant message that vLLM continues (`continue_final_message`). Budgets shrink
    by the tokens delivered. Only single-choice text streams can be continued.
    """
    if not state.continuable or (body.get("n") or 1) != 1:
        return None
    delivered = state.prior_completion
    new = dict(body)
    if not chat and new.get("max_tokens") is None:
        new["max_tokens"] = COMPLETIONS_DEFAULT_MAX_TOKENS
    for key in ("max_tokens", "max_completion_tokens"):
        value = new.get(key)
        if isinstance(value, int):
            new[key] = value - delivered
            if new[key] < 1:
                return None
    if isinstance(new.get("min_tokens"), int):
        new["min_tokens"] = max(0, new["min_tokens"] - delivered)
    text = state.texts.get(0, "")
    if not text:
        return new
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        messages = list(messages)
        last = messages[-1] if messages else None
        if body.get("continue_final_message") and isinstance(last, dict) and last.get("role") == "assistant":
            if not isinstance(last.get("content"), str):
                return None
            messages[-1] = {**last, "content": last["content"] + text}
        else:
            messages.append({"role": "assistant", "content": text})
        new["messages"] = messages
        new["continue_final_message"] = True
        new["add_generation_prompt"] = False
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str) or body.get("echo"):
            return None
        new["prompt"] = prompt + text
    return new
