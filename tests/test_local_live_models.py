"""The local backend refuses, per model, what the service refuses (see docs/live-models.md)."""

from __future__ import annotations

import pytest

from gateway.local_live import protocol as p


def setup(model: str, **extra) -> dict:
    return {"model": f"models/{model}", "generationConfig": {"responseModalities": ["AUDIO"]}, **extra}


def tools(*behaviors: str | None) -> list[dict]:
    decls = [{"name": f"f{i}", **({"behavior": b} if b else {})} for i, b in enumerate(behaviors)]
    return [{"functionDeclarations": decls}]


def test_function_behaviors_per_model():
    cfg = p.parse_setup(setup("gemini-3.8-live", tools=tools(None, "BLOCKING")), "v1alpha")
    assert [f.behavior for f in cfg.functions] == ["NON_BLOCKING", "BLOCKING"]  # 3.8's default
    cfg = p.parse_setup(setup(p.DEFAULT_MODEL, tools=tools(None, "NON_BLOCKING")), "v1alpha")
    assert [f.behavior for f in cfg.functions] == ["BLOCKING", "NON_BLOCKING"]
    with pytest.raises(p.ProtocolError, match="synchronous only") as info:
        p.parse_setup(setup("gemini-3.1-flash-live-preview", tools=tools("NON_BLOCKING")), "v1alpha")
    assert info.value.code == p.CLOSE_INVALID
    with pytest.raises(p.ProtocolError, match="BLOCKING function calling is not supported"):
        p.parse_setup(setup("gemini-3.8-live-extended-thinking", tools=tools("BLOCKING")), "v1alpha")


@pytest.mark.parametrize(
    ("model", "thinking", "ok"),
    [
        (p.DEFAULT_MODEL, {"thinkingBudget": 0}, True),
        (p.DEFAULT_MODEL, {"thinkingLevel": "LOW"}, False),
        ("gemini-3.8-live", {"thinkingLevel": "LOW"}, False),
        ("gemini-3.8-live-extended-thinking", {"thinkingLevel": "HIGH"}, True),
        ("gemini-3.8-live-extended-thinking", {"thinkingBudget": 10}, False),
    ],
)
def test_thinking_config_per_model(model, thinking, ok):
    body = setup(model)
    body["generationConfig"]["thinkingConfig"] = thinking
    if ok:
        p.parse_setup(body, "v1alpha")
    else:
        with pytest.raises(p.ProtocolError, match="is not supported by"):
            p.parse_setup(body, "v1alpha")


def test_tool_response_scheduling_is_read():
    message = (
        '{"toolResponse": {"functionResponses": [{"id": "c1", "response": {}, "scheduling": "SILENT"}]}}'
    )
    (event,) = p.parse_client_message(message, p.MODELS["gemini-3.8-live"])
    assert event.responses[0].scheduling == "SILENT"
