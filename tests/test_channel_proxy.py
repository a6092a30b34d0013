"""Storage; Admin API; Relay pipeline: a proxy per channel (aiproxy's `proxy_url` and `skip_tls_verify`), over
real HTTP through real proxies (proxies.py: an HTTP forward proxy and a SOCKS5 proxy, both with passwords) and an
HTTPS upstream with a self-signed certificate. Calls, channel tests and "fetch models" go through the channel's
proxy; the fields round-trip through every channel route and FastGPT's full PUT; the password stays a secret.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import threading
import time

import openai
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import aiproxy_local as app
from conftest import unique
from fake_upstream import FakeUpstreamApp, reply_text
from proxies import HttpProxy, Socks5Proxy

PASSWORD = "proxy-Secret-4711"


@pytest.fixture(scope="module")
def http_proxy():
    proxy = HttpProxy("gw", PASSWORD)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def socks_proxy():
    proxy = Socks5Proxy("gw", PASSWORD)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory):
    """The fake upstream behind HTTPS with a self-signed certificate for 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(FakeUpstreamApp(), log_config=None, log_level="warning", lifespan="off",
                                           ssl_certfile=str(folder / "cert.pem"), ssl_keyfile=str(folder / "key.pem")))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield f"https://127.0.0.1:{sock.getsockname()[1]}/ok/v1"
    server.should_exit = True
    thread.join(5)


def channel_of(app_server, model: str) -> dict:
    return next(c for c in app_server.channels() if model in c["models"])


def chat(app_server, model: str, stream: bool = False) -> str:
    client = app_server.openai()
    if stream:
        return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], stream=True) if c.choices)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}]).choices[
        0].message.content


def test_mask_proxy_url_hides_only_the_password():
    assert app.mask_proxy_url(f"socks5://gw:{PASSWORD}@10.0.0.1:1080") == "socks5://gw:pr…11@10.0.0.1:1080"
    assert app.mask_proxy_url("http://10.0.0.1:3128") == "http://10.0.0.1:3128"
    assert app.mask_proxy_url("") == ""


def test_http_proxy_carries_calls_tests_and_model_lists(app_server, upstream, http_proxy):
    model = unique("px-http")
    app_server.add_channel(name=unique("px"), base_url=upstream.url(), models=[model], proxy_url=http_proxy.url())
    before = len(http_proxy.seen)
    assert chat(app_server, model) == reply_text(3) and chat(app_server, model, stream=True) == reply_text(3)
    assert [s["target"] for s in http_proxy.seen[before:]] == [f"{upstream.url()}/chat/completions"] * 2
    test = app_server.api("GET", f"/api/channel/{channel_of(app_server, model)['id']}/test/{model}")["data"]
    assert test["success"] and http_proxy.seen[-1]["target"].endswith("/chat/completions")
    listed = app_server.api("POST", "/api/channel/upstream-models", json={
        "type": 1, "key": "sk-fake", "base_url": upstream.url(), "proxy_url": http_proxy.url()})
    assert listed["success"] and http_proxy.seen[-1]["target"] == f"{upstream.url()}/models"


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_socks5_proxy_carries_calls_and_streams(app_server, upstream, socks_proxy, scheme):
    model = unique(f"px-{scheme}")
    app_server.add_channel(name=unique("px"), base_url=upstream.url(), models=[model],
                           proxy_url=socks_proxy.url(scheme=scheme))
    before = len(socks_proxy.seen)
    assert chat(app_server, model, stream=True) == reply_text(3) and chat(app_server, model) == reply_text(3)
    assert socks_proxy.seen[before:] and all(s["port"] == upstream.port for s in socks_proxy.seen[before:])


@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_a_refused_proxy_fails_the_call_and_never_shows_the_password(app_server, upstream, http_proxy,
                                                                     socks_proxy, kind):
    wrong = "wrong-Password-0042"
    proxy = http_proxy if kind == "http" else socks_proxy
    model = unique(f"px-wrong-{kind}")
    app_server.add_channel(name=unique("px"), base_url=upstream.url(), models=[model], proxy_url=proxy.url(wrong))
    refused = proxy.refused
    with pytest.raises(openai.APIStatusError) as failed:
        chat(app_server, model)
    assert failed.value.status_code == 502 and proxy.refused > refused
    assert "proxy" in failed.value.message and wrong not in str(failed.value.body)
    rows = app_server.api("GET", "/api/logs/", params={"model_name": model})["data"]["logs"]
    assert wrong not in str(rows)


def test_fields_round_trip_through_every_channel_route_and_fastgpts_full_put(app_server, upstream, http_proxy):
    model = unique("px-api")
    proxy_url = http_proxy.url()
    app_server.add_channel(name=unique("px"), base_url=upstream.url(), models=[model], proxy_url=proxy_url,
                           skip_tls_verify=True)
    channel = channel_of(app_server, model)
    one = app_server.api("GET", f"/api/channel/{channel['id']}")["data"]
    listed = app_server.api("GET", "/api/channels/", params={"keyword": model})["data"]["channels"]
    searched = app_server.api("GET", "/api/channels/search", params={"keyword": model})["data"]["channels"]
    for shown in (channel, one, listed[0], searched[0]):
        assert (shown["proxy_url"], shown["skip_tls_verify"]) == (proxy_url, True)
    # FastGPT's full PUT: everything it read, with its models changed
    body = {k: channel[k] for k in ("type", "name", "base_url", "proxy_url", "model_mapping", "configs", "key",
                                    "status", "priority", "sets", "skip_tls_verify")}
    assert app_server.api("PUT", f"/api/channel/{channel['id']}", json=dict(body, models=[model, "m2"]))["success"]
    # a PUT without them keeps them; a masked password keeps the stored one
    assert app_server.api("PUT", f"/api/channel/{channel['id']}", json={"models": [model]})["success"]
    assert app_server.api("PUT", f"/api/channel/{channel['id']}", json={
        "proxy_url": app.mask_proxy_url(proxy_url)})["success"]
    after = app_server.api("GET", f"/api/channel/{channel['id']}")["data"]
    assert (after["proxy_url"], after["skip_tls_verify"], after["models"]) == (proxy_url, True, [model])
    refused = app_server.api("PUT", f"/api/channel/{channel['id']}", json={
        "proxy_url": f"ftp://gw:{PASSWORD}@127.0.0.1:21"})
    assert not refused["success"] and "proxy_url" in refused["message"] and PASSWORD not in refused["message"]
    assert app_server.api("PUT", f"/api/channel/{channel['id']}", json={"proxy_url": "",
                                                                         "skip_tls_verify": False})["success"]
    cleared = app_server.api("GET", f"/api/channel/{channel['id']}")["data"]
    assert (cleared["proxy_url"], cleared["skip_tls_verify"]) == ("", False)


def test_skip_tls_verify_reaches_a_self_signed_upstream(app_server, tls_upstream):
    checked, unchecked = unique("px-tls"), unique("px-notls")
    app_server.add_channel(name=unique("px"), base_url=tls_upstream, models=[checked])
    app_server.add_channel(name=unique("px"), base_url=tls_upstream, models=[unchecked], skip_tls_verify=True)
    with pytest.raises(openai.APIStatusError) as failed:
        chat(app_server, checked)
    assert failed.value.status_code == 502 and "TLS certificate not trusted" in failed.value.message
    assert chat(app_server, unchecked) == reply_text(3) and chat(app_server, unchecked, stream=True) == reply_text(3)


def test_the_environments_proxy_stays_the_default_and_a_channels_own_replaces_it(start_app, upstream, http_proxy,
                                                                                 socks_proxy):
    server = start_app(env={"HTTP_PROXY": http_proxy.url(), "http_proxy": None, "NO_PROXY": "", "no_proxy": None,
                            "ALL_PROXY": None, "all_proxy": None})
    server.add_channel(name="env", base_url=upstream.url(), models=["via-env"])
    server.add_channel(name="own", base_url=upstream.url(), models=["via-own"], proxy_url=socks_proxy.url())
    through_http, through_socks = len(http_proxy.seen), len(socks_proxy.seen)
    assert chat(server, "via-env") == reply_text(3)
    assert len(http_proxy.seen) == through_http + 1 and len(socks_proxy.seen) == through_socks
    assert chat(server, "via-own") == reply_text(3)
    assert len(http_proxy.seen) == through_http + 1 and len(socks_proxy.seen) > through_socks
