"""The cost of a call's tokens (gateway.cost) and LIVE_PRICES."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError
from gateway.cost import Prices, PricesError
from tests.support.gateway import UNUSED_LIVE_URL, settings_for


def test_tokens_are_priced_by_direction_and_modality() -> None:
    prices = Prices(audio_in=3.0, text_in=0.5, audio_out=12.0, text_out=2.0)
    by_modality = {"prompt_audio": 1_000_000, "prompt_text": 2_000_000, "response_audio": 500_000,
                   "response_text": 250_000}  # fmt: skip
    assert prices.cost_usd(3_000_000, 750_000, by_modality) == pytest.approx(3.0 + 1.0 + 6.0 + 0.5)
    # Video and images are priced as audio input; documents as text.
    assert prices.cost_usd(2_000_000, 0, {"prompt_video": 1_000_000, "prompt_document": 1_000_000}) == (
        pytest.approx(3.5)
    )


def test_tokens_without_a_modality_are_priced_as_audio_so_the_estimate_does_not_fall_short() -> None:
    prices = Prices()
    assert prices.cost_usd(1_000_000, 1_000_000, {}) == pytest.approx(prices.audio_in + prices.audio_out)
    # Part broken down, the rest not: the rest at the audio price.
    partly = prices.cost_usd(1_000_000, 0, {"prompt_text": 400_000})
    assert partly == pytest.approx(0.4 * prices.text_in + 0.6 * prices.audio_in)
    assert prices.cost_usd(0, 0, {}) == 0.0


def test_a_minute_of_conversation_costs_cents_at_the_default_prices() -> None:
    # Live counts 25 tokens a second of audio: a minute of the caller in, half a minute of the agent out.
    cost = Prices().cost_usd(1500, 750, {"prompt_audio": 1500, "response_audio": 750})
    assert cost == pytest.approx((1500 * 3.0 + 750 * 12.0) / 1e6)


def test_live_prices_sets_some_and_keeps_the_rest() -> None:
    assert Prices.parse("") == Prices()
    assert Prices.parse(" audio_out=10 , text_in=0.1") == Prices(audio_out=10.0, text_in=0.1)
    assert settings_for(UNUSED_LIVE_URL, LIVE_PRICES="audio_in=2.5").live_prices.audio_in == 2.5


@pytest.mark.parametrize(
    ("value", "says"),
    [("audio=3", "NAME=USD"), ("audio_in", "NAME=USD"), ("audio_in=cheap", "not a number"),
     ("audio_in=-1", "between 0")],
)  # fmt: skip
def test_a_bad_live_prices_is_refused_at_start_up_naming_it(value: str, says: str) -> None:
    with pytest.raises(PricesError, match=says):
        Prices.parse(value)
    with pytest.raises(ConfigError, match="LIVE_PRICES"):
        settings_for(UNUSED_LIVE_URL, LIVE_PRICES=value)
