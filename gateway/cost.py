"""What a call cost: Live's tokens (`usageMetadata`, by modality, in and out) at a price table.

`LIVE_PRICES` is the table, USD per million tokens: `audio_in=3,text_in=0.5,audio_out=12,text_out=2`; a
price it leaves out keeps its default. The defaults are Google's published paid-tier prices for the default
model (gemini-2.5-flash-native-audio, Live API), as read on 2026-11-30 (see the README). Video and image
input are priced as audio input (Google prices them alike); tokens Live reported without a modality are
priced as audio, the dearer kind, so the estimate does not fall short.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

PER_MILLION = 1_000_000
PRICES_AS_OF = "2026-11-30"


class PricesError(ValueError):
    """LIVE_PRICES could not be read; the message says what would work."""


@dataclass(frozen=True)
class Prices:
    """USD per million tokens, by direction and modality."""

    audio_in: float = 3.00
    text_in: float = 0.50
    audio_out: float = 12.00
    text_out: float = 2.00

    @classmethod
    def parse(cls, text: str) -> Prices:
        """`audio_in=3,text_in=0.5,audio_out=12,text_out=2` (any of them; the others keep their default)."""
        known = {f.name for f in fields(cls)}
        values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = (s.strip() for s in item.partition("="))
            if not sep or name not in known:
                raise PricesError(
                    f"{item!r} is not NAME=USD_PER_MILLION_TOKENS with NAME one of {', '.join(sorted(known))}"
                )
            try:
                price = float(value)
            except ValueError:
                raise PricesError(f"{name}={value!r} is not a number of US dollars") from None
            if not 0 <= price < 10_000:
                raise PricesError(f"{name}={value} must be between 0 and 10000 USD per million tokens")
            values[name] = price
        return cls(**values)

    def cost_usd(self, prompt_tokens: int, response_tokens: int, by_modality: Mapping[str, int]) -> float:
        """The cost of these tokens. `by_modality` is keyed as Live's usage is: `prompt_audio`,
        `response_text`, ...; what the totals hold beyond it is priced as audio."""
        prompt_priced = response_priced = 0
        total = 0.0
        for key, count in by_modality.items():
            direction, _, modality = key.partition("_")
            if direction == "prompt":
                prompt_priced += count
                total += count * (self.text_in if modality in ("text", "document") else self.audio_in)
            elif direction == "response":
                response_priced += count
                total += count * (self.text_out if modality == "text" else self.audio_out)
        total += max(0, prompt_tokens - prompt_priced) * self.audio_in
        total += max(0, response_tokens - response_priced) * self.audio_out
        return total / PER_MILLION
