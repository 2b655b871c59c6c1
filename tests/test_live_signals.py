"""The server signals of 2026's Live models, parsed and used where they make the call better: the end of
generation ends the turn on the line (its mark, a hang-up after it), an interim transcript of the caller
talking over a reply still playing out clears it at once, a refused turn is logged; `waitingForInput` is
parsed and otherwise ignored."""

from __future__ import annotations

import json

from gateway.call.line import Played
from gateway.live import protocol as lp
from tests.support.call_doubles import MemoryLine, ScriptedLive
from tests.test_call import AGENT_24K, hang_up, start_call, until


def test_the_signals_are_parsed_in_the_order_to_act_on_them():
    message = {
        "serverContent": {
            "interimInputTranscription": {"text": "wait"},
            "waitingForInput": True,
            "generationComplete": True,
            "turnComplete": True,
            "turnCompleteReason": "NEED_MORE_INPUT",
        }
    }
    assert lp.parse_server_message(json.dumps(message)) == [
        lp.InterimInputTranscript("wait"),
        lp.WaitingForInput(),
        lp.GenerationComplete(),
        lp.TurnComplete("NEED_MORE_INPUT"),
    ]
    unspecified = {
        "serverContent": {"turnComplete": True, "turn_complete_reason": "TURN_COMPLETE_REASON_UNSPECIFIED"}
    }
    assert lp.parse_server_message(json.dumps(unspecified)) == [lp.TurnComplete()]


async def test_generation_complete_ends_the_turn_on_the_line_before_turn_complete():
    line, live = MemoryLine(), ScriptedLive()
    call, task = start_call(line, live)
    conn = await live.connection(0)
    conn.say(lp.AgentAudio(AGENT_24K), lp.WaitingForInput(), lp.GenerationComplete())
    await until(lambda: line.actions("mark") == ["turn-1"])  # no turnComplete yet
    assert not call.state.playout.generating  # talking over the playout is the gateway's to clear now
    conn.say(lp.TurnComplete())  # comes once the playout is over: nothing more to mark
    conn.say(lp.AgentAudio(AGENT_24K), lp.TurnComplete())
    await until(lambda: line.actions("mark") == ["turn-1", "turn-2"])
    await hang_up(line, task)


async def test_an_interim_transcript_over_a_finished_reply_clears_the_line_at_once():
    line, live = MemoryLine(), ScriptedLive()
    _, task = start_call(line, live)
    conn = await live.connection(0)
    conn.say(lp.AgentAudio(AGENT_24K), lp.GenerationComplete())
    await until(lambda: line.actions("mark") == ["turn-1"])
    conn.say(lp.InterimInputTranscript("no wait"))  # the mark has not come back: the reply is still playing
    await until(lambda: line.actions("clear"))
    line.put(Played("turn-1"))  # the flushed mark's echo proves nothing
    conn.say(lp.InterimInputTranscript("no wait I"))  # nothing left playing: no second clear
    conn.say(lp.InputTranscript("no wait I meant Tuesday"), lp.AgentAudio(AGENT_24K), lp.TurnComplete())
    await until(lambda: line.actions("mark") == ["turn-1", "turn-2"])  # all of it has been acted on
    assert len(line.actions("clear")) == 1
    await hang_up(line, task)


async def test_a_refused_turn_is_logged_with_its_reason(capsys):
    line, live = MemoryLine(), ScriptedLive()
    _, task = start_call(line, live)
    conn = await live.connection(0)
    conn.say(lp.TurnComplete("PROHIBITED_INPUT_CONTENT"), lp.TurnComplete("NEED_MORE_INPUT"))
    await until(lambda: "live_turn_refused" in capsys.readouterr().err, timeout=2)
    await hang_up(line, task)
