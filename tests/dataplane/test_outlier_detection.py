"""Outlier detection (issue 11): consecutive 5xx and consecutive gateway errors eject an endpoint
for base x (its number of ejections); never more than max_ejection_percent of the endpoints at once,
though one always may be; below panic_threshold_percent healthy the cluster balances over all.
Routes here retry nothing, so the client sees every raw outcome."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx

from helpers import cluster, http_listener, route, unused_port, wait_until

NO_RETRY = {"attempts": 0}


def start(proxy, endpoints: list[str], **options: Any) -> tuple[Any, str]:
    """A proxy with one round-robin cluster `c` behind a route that does not retry; and its URL."""
    dp = proxy(
        {
            "listeners": [http_listener("web", [{**route("c"), "retry": NO_RETRY}])],
            "clusters": [cluster("c", endpoints, lb="round_robin", **options)],
        }
    )
    return dp, f"http://{dp.addresses()['web']}/"


def one_good_and_failing(http_backend, backend, proxy, failing: int, max_ejection_percent: int):
    """A cluster of one good endpoint and `failing` ones answering 500, each ejected for a minute
    after 2 errors, at most `max_ejection_percent` of them at once: the failing, the proxy, its URL."""
    good = backend("good")
    bad = [http_backend(f"bad{i}", status=500) for i in range(failing)]
    outlier = {"consecutive_5xx": 2, "base_ejection_ms": 60000, "max_ejection_percent": max_ejection_percent}
    dp, url = start(proxy, [good.address, *(b.address for b in bad)], outlier_detection=outlier)
    return bad, dp, url


def endpoints(dp: Any) -> dict[str, dict[str, Any]]:
    return dp.stats()["clusters"]["c"]["endpoints"]


def test_consecutive_5xx_ejects_and_the_healthy_endpoint_takes_the_traffic(http_backend, backend, proxy) -> None:
    good, bad = backend("good"), http_backend("bad", status=500)
    outlier = {"consecutive_5xx": 3, "consecutive_gateway_errors": 0, "base_ejection_ms": 60000}
    dp, url = start(proxy, [good.address, bad.address], outlier_detection=outlier)
    with httpx.Client() as c:
        answers = [c.get(url) for _ in range(30)]
    # Exactly the three 500s that make the streak reach the client; then `good` answers alone.
    assert Counter(r.status_code for r in answers) == Counter({200: 27, 500: 3})
    assert all(r.headers["x-backend"] == "good" for r in answers[6:])
    ep = endpoints(dp)[bad.address]
    assert (ep["ejections"], ep["ejected"], ep["healthy"], ep["errors_5xx"]) == (1, True, False, 3)
    assert 55000 < ep["ejected_for_ms"] <= 60000
    assert ep["health_check"] is None and ep["health_checks"] == {"passed": 0, "failed": 0}
    ok = endpoints(dp)[good.address]
    assert (ok["ejections"], ok["ejected"], ok["healthy"], ok["errors_5xx"]) == (0, False, True, 0)
    assert "ejected_for_ms" not in ok


def test_consecutive_gateway_errors_eject_503s_and_connect_failures_not_500s(http_backend, backend, proxy) -> None:
    good, e503, e500 = backend("good"), http_backend("e503", status=503), http_backend("e500", status=500)
    dead = f"127.0.0.1:{unused_port()}"
    outlier = {
        "consecutive_5xx": 0,
        "consecutive_gateway_errors": 3,
        "base_ejection_ms": 60000,
        # Room to eject both, and no panic while only half is left.
        "max_ejection_percent": 100,
        "panic_threshold_percent": 0,
    }
    dp, url = start(proxy, [good.address, e503.address, e500.address, dead], outlier_detection=outlier)
    with httpx.Client() as c:
        answers = [c.get(url) for _ in range(40)]
    got = Counter((r.status_code, r.headers.get("x-backend") or r.headers.get("x-meshctl-error")) for r in answers)
    assert got[503, "e503"] == 3, got
    assert got[502, "connect_failure"] == 3, got
    # A 500 is no gateway error: that endpoint keeps its share.
    assert got[500, "e500"] >= 10, got
    eps = endpoints(dp)
    assert (eps[e503.address]["ejections"], eps[dead]["ejections"]) == (1, 1)
    assert eps[dead]["connect_failures"] == 3 and eps[dead]["errors_5xx"] == 3
    assert eps[e500.address]["ejections"] == 0 and eps[e500.address]["healthy"] is True
    assert eps[e500.address]["errors_5xx"] == got[500, "e500"]


def test_each_ejection_lasts_base_times_its_number(http_backend, backend, proxy) -> None:
    good, bad = backend("good"), http_backend("bad", status=500)
    base = 500
    outlier = {"consecutive_5xx": 2, "base_ejection_ms": base, "max_ejection_ms": 10000}
    dp, url = start(proxy, [good.address, bad.address], outlier_detection=outlier)

    def eject(n: int, client: httpx.Client) -> int:
        """Sends requests until the n-th ejection; how long it has left, read right after it."""
        for _ in range(20):
            client.get(url)
            ep = endpoints(dp)[bad.address]
            if ep["ejections"] == n:
                assert ep["ejected"] is True
                return int(ep["ejected_for_ms"])
        raise AssertionError(f"no ejection {n}: {endpoints(dp)[bad.address]}")

    with httpx.Client() as c:
        first = eject(1, c)
        assert 0 < first <= base
        # Once the ejection is over the endpoint is picked again, and fails its first answer.
        wait_until(lambda: c.get(url).headers["x-backend"] == "bad", 2 * base / 1000 + 2, "the first ejection to end")
        second = eject(2, c)
    # Read within `base` of the ejection (however loaded the machine), it tells the two apart.
    assert base < second <= 2 * base


def test_max_ejection_percent_limits_ejections(http_backend, backend, proxy) -> None:
    bad, dp, url = one_good_and_failing(http_backend, backend, proxy, failing=3, max_ejection_percent=25)
    with httpx.Client() as c:
        for _ in range(40):
            c.get(url)
            # 25 % of 4: one at a time, never two.
            assert sum(ep["ejected"] for ep in endpoints(dp).values()) <= 1
    eps = endpoints(dp)
    assert sum(ep["ejections"] for ep in eps.values()) == 1
    # The two left failing have failed far past the threshold without being ejected.
    still_in = [eps[b.address] for b in bad if not eps[b.address]["ejected"]]
    assert len(still_in) == 2 and all(ep["errors_5xx"] >= 6 and ep["healthy"] for ep in still_in)


def test_one_ejection_is_allowed_even_below_one_percent_share(http_backend, backend, proxy) -> None:
    # 10 % of 3 endpoints is 0.3: still one may be ejected.
    bad, dp, url = one_good_and_failing(http_backend, backend, proxy, failing=2, max_ejection_percent=10)
    with httpx.Client() as c:
        for _ in range(30):
            c.get(url)
    eps = endpoints(dp)
    assert [eps[b.address]["ejections"] for b in bad].count(1) == 1, eps
    assert sum(ep["ejected"] for ep in eps.values()) == 1


def test_below_the_panic_threshold_the_cluster_balances_over_all(http_backend, proxy) -> None:
    a, b, c, d = (http_backend(n) for n in "abcd")
    c.health = 503  # out by its health check from the start
    # A generous timeout: a passing endpoint timing out twice in a row would start the panic early.
    check = {"type": "http", "path": "/healthz", "interval_ms": 200, "jitter_ms": 20, "timeout_ms": 200}
    check |= {"unhealthy_threshold": 2, "healthy_threshold": 2}
    outlier = {"consecutive_5xx": 3, "base_ejection_ms": 60000, "panic_threshold_percent": 60}
    dp, url = start(proxy, [x.address for x in (a, b, c, d)], outlier_detection=outlier, health_check=check)
    wait_until(lambda: endpoints(dp)[c.address]["health_check"] == "failing", what="c's check to fail")

    def spread(n: int) -> Counter[str]:
        with httpx.Client() as client:
            return Counter(client.get(url).headers["x-backend"] for _ in range(n))

    # 3 of 4 healthy (75 % >= 60 %): no panic, c gets nothing.
    assert set(spread(30)) == {"a", "b", "d"}
    assert dp.stats()["clusters"]["c"]["panic"] == 0

    a.status = 500
    wait_until(lambda: spread(1) and endpoints(dp)[a.address]["ejected"], what="a to be ejected")
    # 2 of 4 healthy (50 % < 60 %): every endpoint takes its turn, the ejected and the failing ones too.
    before = dp.stats()["clusters"]["c"]["panic"]
    assert spread(40) == Counter({"a": 10, "b": 10, "c": 10, "d": 10})
    assert dp.stats()["clusters"]["c"]["panic"] - before == 40
    eps = endpoints(dp)
    assert (eps[a.address]["healthy"], eps[a.address]["ejections"], eps[a.address]["errors_5xx"]) == (False, 1, 13)
    assert (eps[c.address]["healthy"], eps[c.address]["health_check"]) == (False, "failing")
    assert eps[c.address]["health_checks"]["failed"] >= 2 and eps[c.address]["errors_5xx"] == 0
    assert eps[b.address]["health_checks"]["passed"] >= 2 and eps[b.address]["health_check"] == "passing"
