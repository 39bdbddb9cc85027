"""Money as integer nanos (1e-9 currency units), so that sums over millions of rows are exact.

Prices come from the config as floats per million tokens. They are turned into integer
nanos per million tokens once (through their decimal text, so 0.1 is exactly 0.1), and
every amount after that is integer arithmetic.
"""

from decimal import Decimal
from typing import Protocol

NANOS_PER_UNIT = 1_000_000_000
TOKENS_PER_MTOK = 1_000_000


class PriceLike(Protocol):
    """What `revenue` needs from a price: config.Price and meter.rows.PriceEntry both fit."""

    # Read-only properties, so that frozen dataclasses fit.
    @property
    def input_per_mtok(self) -> float: ...

    @property
    def output_per_mtok(self) -> float: ...

    @property
    def cached_input_per_mtok(self) -> float | None: ...


def to_nanos(amount: float | int | str | Decimal) -> int:
    """Currency units -> nanos, rounded half-even to the nano (prices finer than 1e-9 are not kept)."""
    value = Decimal(str(amount)) * NANOS_PER_UNIT
    if not value.is_finite():
        raise ValueError(f"amount is not a finite number: {amount!r}")
    return int(value.to_integral_value())


def from_nanos(nanos: int) -> Decimal:
    """Nanos -> exact Decimal currency units (for exports and JSON)."""
    return Decimal(nanos).scaleb(-9)


def price_nanos_per_mtok(price: PriceLike) -> tuple[int, int, int]:
    """(input, output, cached input) in nanos per million tokens; cached falls back to input."""
    cached = price.cached_input_per_mtok
    if cached is None:
        cached = price.input_per_mtok
    return to_nanos(price.input_per_mtok), to_nanos(price.output_per_mtok), to_nanos(cached)


def revenue_from_rates(
    rates: tuple[int, int, int], prompt_tokens: int, completion_tokens: int, cached_tokens: int
) -> int:
    """Gross nanos for one request from integer rates (see `revenue`)."""
    input_rate, output_rate, cached_rate = rates
    if min(prompt_tokens, completion_tokens, cached_tokens) < 0:
        raise ValueError("token counts must not be negative")
    # Cached tokens are a subset of the prompt; a count above the prompt is a reporting
    # glitch upstream and must not bill more prompt tokens than were sent.
    cached = min(cached_tokens, prompt_tokens)
    scaled = (prompt_tokens - cached) * input_rate + cached * cached_rate + completion_tokens * output_rate
    # One rounding per request, down: a client is never billed above the exact price,
    # and what is lost is under one nano per request.
    return scaled // TOKENS_PER_MTOK


def revenue(price: PriceLike, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> int:
    """Gross revenue of one request in nanos.

    Cached tokens (a subset of the prompt tokens) are charged at cached_input_per_mtok,
    the rest of the prompt at input_per_mtok, completion tokens at output_per_mtok.
    The result is rounded down to the nano.
    """
    return revenue_from_rates(price_nanos_per_mtok(price), prompt_tokens, completion_tokens, cached_tokens)


def operator_share_nanos(gross: int, share: float) -> int:
    """The operator's part of `gross` nanos: floor(gross * share).

    The share goes through its decimal text (0.7 is exactly 0.7), and the result is
    rounded down to the nano, so operator + remainder always equals gross exactly and
    the operator is never credited more than its exact share.
    """
    ratio = Decimal(str(share))
    if not ratio.is_finite() or not 0 <= ratio <= 1:
        raise ValueError(f"operator share must be between 0 and 1, got {share!r}")
    numerator, denominator = ratio.as_integer_ratio()
    return gross * numerator // denominator


def format_money(nanos: int, currency: str, places: int | None = None) -> str:
    """'1.50 USD', '0.000042 USD'.

    Without `places`: at least 2 decimals and as many more as needed to show the exact
    amount (up to 9). With `places`: rounded half-even to that many decimals.
    """
    amount = from_nanos(nanos)
    if places is not None:
        text = f"{amount.quantize(Decimal(1).scaleb(-places)):f}"
    else:
        text = f"{amount:.9f}".rstrip("0")
        whole, _, frac = text.partition(".")
        text = f"{whole}.{frac.ljust(2, '0')}"
    return f"{text} {currency}" if currency else text
