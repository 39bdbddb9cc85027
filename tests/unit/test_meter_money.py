import random
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import pytest

from isense_slurm.meter.money import (
    format_money,
    from_nanos,
    operator_share_nanos,
    revenue,
    to_nanos,
)


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None


PRICE = Price(0.10, 0.40, 0.05)


def test_cached_tokens_are_part_of_the_prompt_and_charged_at_the_cached_rate():
    # 800 uncached x 0.10 + 200 cached x 0.05 + 500 out x 0.40 = 290 per million tokens
    assert revenue(PRICE, prompt_tokens=1000, completion_tokens=500, cached_tokens=200) == 290_000
    assert revenue(PRICE, 1000, 500, 0) == 300_000


def test_cached_count_above_the_prompt_is_clamped_and_missing_cached_price_falls_back():
    assert revenue(PRICE, 100, 0, 500) == revenue(PRICE, 100, 0, 100) == 5_000
    assert revenue(Price(0.10, 0.40, None), 100, 0, 100) == 10_000


def test_negative_tokens_are_refused():
    with pytest.raises(ValueError):
        revenue(PRICE, -1, 0, 0)


def test_revenue_rounds_down_once_per_request():
    # 7 tokens at 0.33/Mtok is exactly 2310 nanos; 1 token at 0.0000003/Mtok is 0.0003 nanos.
    assert revenue(Price(0.33, 0, 0), 7, 0, 0) == 2_310
    assert revenue(Price(0.0000003, 0, 0), 1, 0, 0) == 0
    assert revenue(Price(1.0000001, 0, 0), 3, 0, 0) == 3_000  # 3000.0003 nanos


def test_sums_are_exact_where_floats_drift():
    # Ten requests of 0.1 each: floats sum to 0.9999999999999999, nanos to exactly 1.
    amounts = [revenue(Price(0.1, 0.2, 0.1), 1_000_000, 0, 0) for _ in range(10)]
    assert sum([0.1] * 10) != 1.0
    assert sum(amounts) == 1_000_000_000
    assert format_money(sum(amounts), "USD") == "1.00 USD"


def test_many_requests_sum_to_the_exact_rational_total():
    rng = random.Random(7)
    price = Price(0.15, 0.60, 0.075)
    total = exact = 0
    for _ in range(20_000):
        prompt, completion = rng.randrange(0, 4000), rng.randrange(0, 2000)
        cached = rng.randrange(0, prompt + 1)
        total += revenue(price, prompt, completion, cached)
        exact_one = (
            Fraction("0.15") * (prompt - cached) + Fraction("0.075") * cached + Fraction("0.60") * completion
        ) * 1000  # per-Mtok price in units -> nanos per token
        exact += exact_one.numerator // exact_one.denominator
    assert total == exact


def test_operator_share_is_floored_and_never_exceeds_gross():
    assert operator_share_nanos(10, 0.7) == 7
    assert operator_share_nanos(1, 0.7) == 0
    assert operator_share_nanos(3, 0.5) == 1
    assert operator_share_nanos(999, 1.0) == 999
    assert operator_share_nanos(999, 0.0) == 0
    big = 10**17 + 3
    assert operator_share_nanos(big, 0.3) == big * 3 // 10
    # a share with many digits still floors exactly (no 28-digit Decimal rounding)
    share = 0.123456789012345678
    assert operator_share_nanos(big, share) == big * Fraction(str(share)).numerator // Fraction(str(share)).denominator


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan")])
def test_operator_share_out_of_range(share):
    with pytest.raises(ValueError):
        operator_share_nanos(100, share)


@pytest.mark.parametrize(
    "nanos, places, text",
    [
        (1_500_000_000, None, "1.50 USD"),
        (42_000, None, "0.000042 USD"),
        (0, None, "0.00 USD"),
        (1, None, "0.000000001 USD"),
        (-1_500_000_000, None, "-1.50 USD"),
        (123_456_789, 4, "0.1235 USD"),
        (1_005_000_000, 2, "1.00 USD"),  # half-even
        (12_000_000_000, 0, "12 USD"),
    ],
)
def test_format_money(nanos, places, text):
    assert format_money(nanos, "USD", places) == text


def test_conversions_go_through_the_decimal_text():
    assert to_nanos(0.1) == 100_000_000
    assert to_nanos(2.675) == 2_675_000_000
    assert from_nanos(1) == Decimal("0.000000001")
