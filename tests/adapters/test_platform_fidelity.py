"""Platform details the docs promise: Twilio's prompt language, welcome greeting,
custom parameters and token flags; Retell's call details and reminders without a
transcript — played from the platforms' documented frames."""

from __future__ import annotations

from tests.adapters.test_retell import connect, required, response, utterance
from tests.adapters.test_twilio import SETUP, prompt, spoken, talk
from tests.adapters.ws_helpers import start_on_gemini
from tests.support.client import Client
from tests.support.fake_gemini import FakeGemini
from tests.support.gateway import GatewayFactory

GREETING = "Hi! How can I help you today?"


async def test_twilio_greeting_custom_parameters_and_token_flags(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = start_on_gemini(
        start_gateway,
        fake_gemini,
        GATEWAY_INSTRUCTIONS="You help customer {{customerId}} on call {{callSid}}.",
        TWILIO_WELCOME_GREETING=GREETING,
        TWILIO_INTERRUPTIBLE="false",
        TWILIO_PREEMPTIBLE="true",
    )
    fake_gemini.reply("Of course.")
    async with await Client.connect(f"{gateway.ws_url}/twilio") as call:
        await call.send(SETUP)
        # The caller barges into the welcome greeting.
        await call.send(
            {
                "type": "interrupt",
                "utteranceUntilInterrupt": "Hi! How can",
                "durationUntilInterruptMs": "900",
            }
        )
        await call.send(prompt("I need help with my bill."))
        frames = await talk(call)
    tokens = [f for f in frames if f["type"] == "text" and f["token"]]
    assert tokens
    assert all(f["interruptible"] is False and f["preemptible"] is True for f in tokens)
    (request,) = fake_gemini.wait_for_requests(1)
    assert request.turns == [("model", ["Hi! How can"]), ("user", ["I need help with my bill."])]
    assert request.system_text is not None
    assert "You help customer 42 on call CA00000000000000000000000000000001." in (
        request.system_text
    )


async def test_twilio_prompt_lang_switches_the_session_and_the_voice(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = start_on_gemini(start_gateway, fake_gemini, TWILIO_WELCOME_GREETING=GREETING)
    fake_gemini.reply("Claro. ¿En qué le ayudo?")
    fake_gemini.reply("De nada.")
    async with await Client.connect(f"{gateway.ws_url}/twilio") as call:
        await call.send(SETUP)
        await call.send({**prompt("Hola, ¿habla español?"), "lang": "es-ES"})
        first = await talk(call)
        await call.send({**prompt("Gracias."), "lang": "es-ES"})
        second = await talk(call)
    assert first[0] == {
        "type": "language",
        "ttsLanguage": "es-ES",
        "transcriptionLanguage": "es-ES",
    }
    assert spoken(first[1:]).strip() == "Claro. ¿En qué le ayudo?"
    assert all(f["type"] == "text" for f in second)  # no second switch
    first_request, _ = fake_gemini.wait_for_requests(2)
    # The whole greeting was heard (no barge-in): it opens the history.
    assert first_request.turns[0] == ("model", [GREETING])


async def test_retell_call_details_are_template_variables(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = start_on_gemini(
        start_gateway,
        fake_gemini,
        GATEWAY_INSTRUCTIONS="Caller {{from_number}} ({{tier}}); unknown stays {{nope}}.",
    )
    fake_gemini.reply("Hello gold member.")
    call, _ = await connect(gateway, "call_vars")
    async with call:
        await call.send(
            {
                "interaction_type": "call_details",
                "call": {
                    "call_id": "call_vars",
                    "from_number": "+14155550100",
                    "to_number": "+14155550199",
                    "metadata": {"tier": "gold"},
                },
            }
        )
        await call.send(required(1, [utterance("user", "Hi")]))
        await response(call, 1)
    (request,) = fake_gemini.wait_for_requests(1)
    assert request.system_text is not None
    assert "Caller +14155550100 (gold); unknown stays {{nope}}." in request.system_text


async def test_retell_reminder_without_a_transcript_uses_the_stored_history(
    start_gateway: GatewayFactory, fake_gemini: FakeGemini
) -> None:
    gateway = start_on_gemini(start_gateway, fake_gemini)
    fake_gemini.reply("Your order ships tomorrow.")
    fake_gemini.reply("Are you still there?")
    transcript = [utterance("user", "When does my order ship?")]
    call, _ = await connect(gateway, "call_reminder")
    async with call:
        await call.send(required(1, transcript))
        await response(call, 1)
        await call.send(required(2, [], kind="reminder"))
        reminder = await response(call, 2)
    assert "".join(f["content"] for f in reminder).strip() == "Are you still there?"
    _, second = fake_gemini.wait_for_requests(2)
    assert second.turns[:2] == [
        ("user", ["When does my order ship?"]),
        ("model", ["Your order ships tomorrow."]),
    ]
