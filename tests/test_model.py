"""The JSON forms of Envelope and Decision are what dataclasses.asdict gives (written out for speed)."""

from __future__ import annotations

import dataclasses

from mailgw.message.model import Decision, Envelope


def test_envelope_to_json_is_asdict():
    env = Envelope(mail_from="a@b.vn", rcpts=["c@d.vn", "e@f.vn"], listener="relay", role="relay",
                   client_ip="127.0.0.1", helo="h", tls="TLSv1.3", auth_user="a@b.vn", smtputf8=True)
    d = env.to_json()
    assert d == dataclasses.asdict(env) and list(d) == [f.name for f in dataclasses.fields(Envelope)]
    assert d["rcpts"] is not env.rcpts
    assert Envelope.from_json(d) == env


def test_decision_to_json_is_asdict_with_header_lists():
    dec = Decision(decision="quarantine", rule="r", mode="enforce", matched=["a", "r"], tags=["t"], reply="550",
                   headers=[("X-A", "1")], archive=["x@y.vn"], notify_sender=True, redact=True,
                   audit=[{"rule": "q", "would": "reject", "tags": ["u"]}])
    d = dec.to_json()
    expected = dataclasses.asdict(dec)
    expected["headers"] = [["X-A", "1"]]
    assert d == expected and list(d) == list(expected)
    for name in ("matched", "tags", "archive", "audit"):
        assert d[name] is not getattr(dec, name)
    assert d["audit"][0] is not dec.audit[0] and d["audit"][0]["tags"] is not dec.audit[0]["tags"]
