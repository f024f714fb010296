"""The JSON form of Envelope is what dataclasses.asdict gives (written out for speed)."""

from __future__ import annotations

import dataclasses

from mailgw.message.model import Envelope


def test_envelope_to_json_is_asdict():
    env = Envelope(mail_from="a@b.vn", rcpts=["c@d.vn", "e@f.vn"], listener="relay", role="relay",
                   client_ip="127.0.0.1", helo="h", tls="TLSv1.3", auth_user="a@b.vn", smtputf8=True)
    d = env.to_json()
    assert d == dataclasses.asdict(env) and list(d) == [f.name for f in dataclasses.fields(Envelope)]
    assert d["rcpts"] is not env.rcpts
    assert Envelope.from_json(d) == env
