"""Every path (sync API calls, upload, download, the trigger's shared aiohttp session) goes through
the proxy the environment or the ``proxy`` extra names; ``NO_PROXY`` bypasses it.

The simulator here answers only proxied requests (421 otherwise), so a call that went direct fails.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time

import pytest

from airflow_provider_kling.exceptions import KlingValidationError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import KlingVideoRequest
from tests.network.conftest import Redirector, every_path, sync_paths, trigger_event, trigger_path, use_connection
from tests.network.proxy import ForwardProxy


def _paths_seen(proxy: ForwardProxy) -> set[str]:
    seen = set()
    for target in proxy.requests():
        path = target.split("://", 1)[-1].partition("/")[2]
        seen.add("/" + path.split("?")[0].rsplit("/", 1)[0] if path.startswith("files") else "/" + path)
    return seen


def _assert_every_path_proxied(proxy: ForwardProxy, task_id: str) -> None:
    seen = _paths_seen(proxy)
    for expected in (
        "/v1/uploads/images",
        "/v1/balance",
        "/v1/videos/generations",
        f"/v1/videos/generations/{task_id}",
        "/files/videos",
    ):
        assert expected in seen, (expected, sorted(seen))


@pytest.mark.parametrize("how", ["env", "extra"])
def test_every_path_goes_through_the_proxy(proxy_sim, monkeypatch, tmp_path, how):
    with ForwardProxy() as proxy:
        if how == "env":
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            use_connection(monkeypatch, proxy_sim.base_url)
        else:
            use_connection(monkeypatch, proxy_sim.base_url, proxy=proxy.url)
        result = sync_paths(tmp_path, f"kl_proxy_{how}")
        _assert_every_path_proxied(proxy, result["task"].id)
        before = len(proxy.requests())
        trigger_path(result["task"].id)
        trigger_polls = proxy.requests()[before:]
        assert trigger_polls and all(t.endswith(f"/v1/videos/generations/{result['task'].id}") for t in trigger_polls)
    assert result["video"].read_bytes()[4:8] == b"ftyp"
    # Nothing reached the simulator directly: it would have answered 421 and the steps above failed.
    assert all(r["status"] != 421 for r in proxy_sim.requests())


def test_the_trigger_path_alone_uses_the_proxy(proxy_sim, monkeypatch):
    with ForwardProxy() as proxy:
        use_connection(monkeypatch, proxy_sim.base_url, proxy=proxy.url)

        async def poll():
            async with KlingHook() as hook:
                return await hook.aget_task("kl_missing", missing_ok=True)

        assert asyncio.run(poll()) is None
        assert [t.rsplit("/", 1)[-1] for t in proxy.requests("GET")] == ["kl_missing"]


def test_https_through_a_connect_tunnel_with_the_private_ca(tls_sim, pki, monkeypatch, tmp_path):
    """``https://kling.proxied`` resolves nowhere: only the proxy's tunnel reaches the TLS simulator."""
    ca, _, _ = pki
    with ForwardProxy({"kling.proxied:443": ("127.0.0.1", tls_sim.port)}) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
        use_connection(monkeypatch, "https://kling.proxied")
        result = every_path(tmp_path, "kl_proxy_tls")
        tunnels = proxy.requests("CONNECT")
    assert tunnels and set(tunnels) == {"kling.proxied:443"}
    assert result["task"].video_url.startswith("https://kling.proxied/files/videos/")
    assert result["video"].read_bytes()[4:8] == b"ftyp"


#: A password that must be percent-encoded in a proxy URL.
PROXY_USER, PROXY_PASSWORD = "kling", "p@ss:w/rd %"


def _proxy_url_with_credentials(proxy: ForwardProxy) -> str:
    from urllib.parse import quote

    return f"http://{PROXY_USER}:{quote(PROXY_PASSWORD, safe='')}@127.0.0.1:{proxy.port}"


@pytest.mark.parametrize("how", ["env", "extra"])
def test_an_authenticating_proxy_gets_its_credentials_on_every_path(proxy_sim, monkeypatch, tmp_path, how):
    """A corporate proxy answering 407 without ``Proxy-Authorization``: every path sends the
    (percent-decoded) user and password from the proxy URL."""
    with ForwardProxy(auth=(PROXY_USER, PROXY_PASSWORD)) as proxy:
        url = _proxy_url_with_credentials(proxy)
        if how == "env":
            monkeypatch.setenv("HTTP_PROXY", url)
            use_connection(monkeypatch, proxy_sim.base_url)
        else:
            use_connection(monkeypatch, proxy_sim.base_url, proxy=url)
        result = every_path(tmp_path, f"kl_proxy_auth_{how}")
        assert proxy.refused == []
        _assert_every_path_proxied(proxy, result["task"].id)


def test_an_authenticating_proxy_gets_its_credentials_in_the_connect_tunnel(tls_sim, pki, monkeypatch, tmp_path):
    ca, _, _ = pki
    names = {"kling.proxied:443": ("127.0.0.1", tls_sim.port)}
    with ForwardProxy(names, auth=(PROXY_USER, PROXY_PASSWORD)) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", _proxy_url_with_credentials(proxy))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
        use_connection(monkeypatch, "https://kling.proxied")
        result = every_path(tmp_path, "kl_proxy_auth_tls")
        assert proxy.refused == []
        assert set(proxy.requests("CONNECT")) == {"kling.proxied:443"}
    assert result["video"].read_bytes()[4:8] == b"ftyp"


def test_no_proxy_bypasses_the_proxy(sim, monkeypatch, tmp_path):
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        use_connection(monkeypatch, sim.base_url)
        hook = KlingHook()
        try:
            hook.get_balance()
        finally:
            hook.close()
        assert len(proxy.requests()) == 1
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        every_path(tmp_path, "kl_no_proxy")
        assert len(proxy.requests()) == 1


def test_a_bad_proxy_extra_fails_before_any_request(sim, monkeypatch):
    use_connection(monkeypatch, sim.base_url, proxy="socks5://127.0.0.1:1080")
    hook = KlingHook()
    with pytest.raises(KlingValidationError, match=r"extra proxy='socks5://127.0.0.1:1080': expected a proxy URL"):
        hook.get_balance()
    assert sim.stats()["requests"]["balance"] == 0


def test_a_cidr_in_no_proxy_bypasses_the_proxy_on_both_paths(sim, monkeypatch):
    """``NO_PROXY=127.0.0.0/8`` (Kubernetes-style CIDR): the sync hook and the trigger both go direct."""
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.0/8")
        use_connection(monkeypatch, sim.base_url)
        hook = KlingHook()
        try:
            task = hook.submit_video(KlingVideoRequest.from_kwargs(prompt="a heron at dawn"), "kl_no_proxy_cidr")
            assert hook.get_task(task.id).id == task.id
        finally:
            hook.close()
        trigger_path(task.id)
        assert proxy.requests() == []
    assert any(r["path"].endswith(f"/v1/videos/generations/{task.id}") for r in sim.requests())


def test_an_unusable_env_proxy_fails_both_paths_before_any_request(sim, monkeypatch):
    """``ALL_PROXY=socks5://...`` cannot be used: the call ends at once naming it; nothing is sent."""
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1")
    use_connection(monkeypatch, sim.base_url)
    hook = KlingHook()
    started = time.monotonic()
    try:
        with pytest.raises(KlingValidationError, match=r"ALL_PROXY='socks5://127.0.0.1:1'.*only http:// and https://"):
            hook.get_task("kl_missing")
    finally:
        hook.close()
    event = asyncio.run(trigger_event("kl_missing", seconds=30.0))
    assert time.monotonic() - started < 5.0  # not retried as a transport error
    assert event["status"] == "error", event
    assert event["error_type"] == "KlingValidationError"
    assert "ALL_PROXY='socks5://127.0.0.1:1'" in event["message"], event
    assert sim.requests() == []


@pytest.mark.parametrize("direction", ["direct_to_proxied", "proxied_to_direct"])
def test_a_redirected_download_is_routed_by_the_host_it_lands_on(sim, monkeypatch, tmp_path, direction):
    """A file host's redirect (CDN to storage) is routed by ``NO_PROXY`` for its own host, not by the
    decision made for the first URL."""
    from urllib.parse import urlsplit

    from tests.conftest import submit_task, wait_terminal

    use_connection(monkeypatch, sim.base_url)
    hook = KlingHook()
    try:
        task = wait_terminal(hook, submit_task(business_id=f"kl_redirect_{direction}").id)
        assert task.video_url
        video = urlsplit(task.video_url)
        sim_port = urlsplit(sim.base_url).port
        direct, proxied = ("127.0.0.1", "localhost")
        first_host, final_host = (direct, proxied) if direction == "direct_to_proxied" else (proxied, direct)
        final = f"http://{final_host}:{sim_port}{video.path}" + (f"?{video.query}" if video.query else "")
        with ForwardProxy() as proxy, Redirector(final) as redirector:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            monkeypatch.setenv("NO_PROXY", direct)
            first = f"http://{first_host}:{redirector.port}/v.mp4"
            stored = hook.download_video(first, tmp_path / "v.mp4")
            seen = proxy.requests()
    finally:
        hook.close()
    assert stored.read_bytes()[4:8] == b"ftyp"
    expected = [final] if direction == "direct_to_proxied" else [first]
    assert seen == expected, seen


#: asyncio starts TLS inside a TLS connection from Python 3.11 (an https:// API through an https:// proxy).
TLS_IN_TLS = sys.version_info >= (3, 11)
#: aiohttp's TLS-in-TLS connections sometimes leave the socket to the proxy to the collector when they
#: close (about 1 in 300 in a loop of aiohttp alone): the tests collect it themselves, under this filter.
TLS_IN_TLS_LEAK = pytest.mark.filterwarnings("ignore::ResourceWarning")


@TLS_IN_TLS_LEAK
@pytest.mark.parametrize("api", ["http", "https"])
def test_an_https_proxy_carries_every_path(api, proxy_sim, tls_sim, pki, monkeypatch, tmp_path):
    """A proxy reached over TLS (``https://`` proxy URL): an ``http://`` API goes to it in absolute
    form inside TLS, an ``https://`` API through a CONNECT tunnel inside TLS (TLS in TLS). Where the
    interpreter's asyncio cannot do TLS in TLS (3.10), the trigger ends at once saying so, sending
    nothing, instead of failing ten polls as connection errors."""
    from airflow_provider_kling.simulator.server import server_ssl_context

    ca, cert, key = pki
    names = {"kling.proxied:443": ("127.0.0.1", tls_sim.port)}
    with ForwardProxy(names, tls=server_ssl_context(str(cert), str(key))) as proxy:
        assert proxy.url.startswith("https://")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))  # trusts the proxy and the TLS API
        base = proxy_sim.base_url if api == "http" else "https://kling.proxied"
        use_connection(monkeypatch, base, proxy=proxy.url)
        if api == "https" and not TLS_IN_TLS:
            result = sync_paths(tmp_path, f"kl_https_proxy_{api}")
            before = len(proxy.requests())
            event = asyncio.run(trigger_event(result["task"].id))
            assert event["status"] == "error" and event["error_type"] == "KlingValidationError", event
            assert "cannot start TLS inside a TLS connection" in event["message"], event
            assert len(proxy.requests()) == before  # the trigger sent nothing
        else:
            result = every_path(tmp_path, f"kl_https_proxy_{api}")
        gc.collect()  # aiohttp's TLS-in-TLS transports are freed here, not in a later test
        if api == "https":
            assert set(proxy.requests("CONNECT")) == {"kling.proxied:443"}
        else:
            _assert_every_path_proxied(proxy, result["task"].id)
    assert result["video"].read_bytes()[4:8] == b"ftyp"


@TLS_IN_TLS_LEAK
def test_a_deferrable_generation_through_an_https_proxy_pays_only_if_the_triggerer_can_wait(
    dags, tls_sim, pki, monkeypatch
):
    """Before paying, a deferrable generation checks that this interpreter's trigger can reach the
    API (https:// API, https:// proxy: TLS in TLS from Python 3.11). Where it cannot, the task fails
    before any request with the ways out; where it can, it completes through the proxy."""
    from airflow.sdk import DAG

    from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator
    from airflow_provider_kling.simulator.server import server_ssl_context
    from tests.operators.test_dag_authors import START

    ca, cert, key = pki
    names = {"kling.proxied:443": ("127.0.0.1", tls_sim.port)}
    with ForwardProxy(names, tls=server_ssl_context(str(cert), str(key))) as proxy:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
        use_connection(monkeypatch, "https://kling.proxied", proxy=proxy.url)
        with DAG("t_https_proxy_deferrable", schedule=None, start_date=START) as dag:
            KlingGenerateVideoOperator(task_id="gen", prompt="p", poll_interval=1, timeout=60, deferrable=True)
        run = dags.run(dag)
        gc.collect()
    if TLS_IN_TLS:
        assert dags.states(run) == {"gen": "success"}
        assert tls_sim.stats()["requests"]["create"] == 1
    else:
        assert dags.states(run) == {"gen": "failed"}
        assert dags.failures() == ["KlingValidationError"]
        assert proxy.requests() == [] and tls_sim.stats()["requests"]["total"] == 0


@pytest.mark.parametrize("api", ["http", "https"])
def test_a_proxy_refusing_the_credentials_fails_every_path_at_once(api, proxy_sim, tls_sim, pki, monkeypatch):
    """407 from the proxy (as the answer, or to the CONNECT of an https:// API) is configuration: one
    request, no retries as a connection error, and the message says what to set."""
    from airflow_provider_kling.exceptions import KlingAPIError

    ca, _, _ = pki
    names = {"kling.proxied:443": ("127.0.0.1", tls_sim.port)}
    with ForwardProxy(names, auth=(PROXY_USER, PROXY_PASSWORD)) as proxy:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
        monkeypatch.setenv(
            "HTTPS_PROXY" if api == "https" else "HTTP_PROXY", f"http://{PROXY_USER}:wrong@127.0.0.1:{proxy.port}"
        )
        use_connection(monkeypatch, proxy_sim.base_url if api == "http" else "https://kling.proxied")
        hook = KlingHook()
        try:
            for call in (
                hook.get_balance,
                lambda: hook.submit_video(KlingVideoRequest.from_kwargs(prompt="p"), "kl_407"),
            ):
                before = len(proxy.refused)
                with pytest.raises(KlingAPIError) as info:
                    call()
                assert info.value.code == "proxy_auth_required", info.value
                assert "user and password" in str(info.value)
                assert len(proxy.refused) == before + 1  # not retried
        finally:
            hook.close()
        before = len(proxy.refused)
        event = asyncio.run(trigger_event("kl_407", seconds=30.0))
        assert event["status"] == "error" and event["error_code"] == "proxy_auth_required", event
        assert len(proxy.refused) == before + 1
