"""SMTP target against a real aiosmtpd server: TLS modes, login, MIME, threading, retries."""

from __future__ import annotations

from collections import deque

import pytest
from servers import captured_logs, make_action, target_config
from servers.smtp import SmtpStub, make_cert

from daemon.actions import PermanentError, RetryableError
from daemon.targets.smtp import SmtpTarget, message_id, thread_id

PASSWORD = "s3cret-smtp-Passw0rd!"
SENDER = "crisisd@alerts.example.org"


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server(request, cert):
    """An SMTP server; parametrise indirectly with (tls, login?)."""
    tls, login = getattr(request, "param", ("none", False))
    stub = SmtpStub(tls, cert, ("crisisd", PASSWORD) if login else None).start()
    yield stub
    stub.stop()


def smtp_target(server, cert, **extra):
    cfg = {"type": "smtp", "host": "127.0.0.1", "port": server.port, "tls": server.tls,
           "sender": SENDER, "timeout": 2, "ca_file": str(cert[0]), **extra}
    return SmtpTarget("mail", target_config(**cfg))


async def test_message_has_text_html_stable_id_and_incident_thread(server, cert):
    target = smtp_target(server, cert)
    action = make_action("email", body="Volume 480 (normally 40).\n\n<b>Quote</b>: \"recall!\"")
    receipt = await target.deliver(action)
    [got] = server.handler.accepted
    msg = got.message
    assert got.mail_from == SENDER and got.rcpt_tos == ["ana@example.org"]
    assert msg["Message-ID"] == message_id(action, SENDER) == receipt.ref
    assert msg["Message-ID"].endswith("@alerts.example.org>")
    assert msg["In-Reply-To"] == msg["References"] == thread_id("inc-1", SENDER)
    assert msg["Subject"] == action.subject
    assert msg["To"] == "Ana Ops <ana@example.org>"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Volume 480" in text and "<b>Quote</b>" in text
    assert "&lt;b&gt;Quote&lt;/b&gt;" in html and "<b>Quote</b>" not in html


async def test_all_mails_of_an_incident_share_one_thread(server, cert):
    target = smtp_target(server, cert)
    for step in ("brief", "approval", "escalation", "resolved"):
        await target.deliver(make_action("email", key=f"inc-1/{step}@mail"))
    await target.deliver(make_action("email", key="inc-2/brief@mail", incident_id="inc-2"))
    msgs = [r.message for r in server.handler.accepted]
    assert len({m["Message-ID"] for m in msgs}) == 5
    assert {m["References"] for m in msgs[:4]} == {thread_id("inc-1", SENDER)}
    assert msgs[4]["References"] == thread_id("inc-2", SENDER)


async def test_chart_is_inline_in_the_html_part(server, cert, tmp_path):
    png = tmp_path / "chart.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    target = smtp_target(server, cert)
    await target.deliver(make_action("email", data={"chart": str(png)}))
    msg = server.handler.accepted[0].message
    related = next(p for p in msg.walk() if p.get_content_type() == "multipart/related")
    html_part, image = related.get_payload()
    assert image.get_content_type() == "image/png"
    assert image.get_content() == png.read_bytes()
    cid = image["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html_part.get_content()
    assert image.get_content_disposition() == "inline"


async def test_deferred_twice_then_accepted_once_with_the_same_message_id(server, cert):
    server.handler.script = deque(["451 4.3.0 try again later", "421 4.7.0 busy"])
    target = smtp_target(server, cert)
    action = make_action("email")
    for _ in range(2):
        with pytest.raises(RetryableError, match=r"4[25]1"):
            await target.deliver(action)
    await target.deliver(action)
    ids = [r.message["Message-ID"] for r in server.handler.received]
    assert len(ids) == 3 and len(set(ids)) == 1
    assert len(server.handler.accepted) == 1


async def test_5xx_is_permanent(server, cert):
    server.handler.script = deque(["554 5.7.1 rejected as spam"])
    with pytest.raises(PermanentError, match="554"):
        await smtp_target(server, cert).deliver(make_action("email"))


async def test_timeout_is_retryable_for_email(server, cert):
    server.handler.script = deque([1.5])
    target = smtp_target(server, cert, timeout=0.3)
    with pytest.raises(RetryableError):
        await target.deliver(make_action("email"))


async def test_connection_refused_is_retryable(cert):
    cfg = target_config(type="smtp", host="127.0.0.1", port=9, tls="none", sender=SENDER,
                        timeout=1)
    with pytest.raises(RetryableError, match=r"127\.0\.0\.1:9"):
        await SmtpTarget("mail", cfg).deliver(make_action("email"))


async def test_no_email_recipient_is_permanent(server, cert):
    with pytest.raises(PermanentError, match="no email address"):
        await smtp_target(server, cert).deliver(make_action("email", to=[{"id": "x"}]))


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # implicit TLS
@pytest.mark.parametrize("server", [("starttls", True), ("implicit", True)], indirect=True)
async def test_tls_with_login_password_from_env_never_logged(server, cert, monkeypatch):
    monkeypatch.setenv("CRISISD_TARGET_MAIL_SECRET", PASSWORD)
    target = smtp_target(server, cert, username="crisisd")
    with captured_logs() as lines:
        receipt = await target.deliver(make_action("email"))
    assert server.handler.logins == ["crisisd"]
    assert len(server.handler.accepted) == 1
    own = [line for line in lines if not line.startswith("mail.log")]  # the server's own log
    assert not [line for line in own if PASSWORD in line]
    assert PASSWORD not in repr(receipt)


@pytest.mark.parametrize("server", [("starttls", True)], indirect=True)
async def test_wrong_password_is_permanent_and_not_echoed(server, cert, monkeypatch):
    monkeypatch.setenv("CRISISD_TARGET_MAIL_SECRET", "wrong-" + PASSWORD)
    with pytest.raises(PermanentError, match="login rejected") as err:
        await smtp_target(server, cert, username="crisisd").deliver(make_action("email"))
    assert PASSWORD not in str(err.value)


@pytest.mark.parametrize("server", [("starttls", False)], indirect=True)
async def test_untrusted_certificate_is_permanent(server, cert):
    target = smtp_target(server, cert)
    target.cfg = target.cfg.model_copy(update={"ca_file": None})
    with pytest.raises(PermanentError, match="certificate"):
        await target.deliver(make_action("email"))


async def test_test_message_is_marked_and_unthreaded(server, cert):
    await smtp_target(server, cert).deliver(
        make_action("email", key="test-notify/mail/1", test=True, subject="crisisd test"))
    msg = server.handler.accepted[0].message
    assert msg["Subject"].startswith("[TEST]") and msg["X-Crisisd-Test"] == "yes"
    assert msg["In-Reply-To"] is None
    assert "TEST message" in msg.get_body(("plain",)).get_content()
