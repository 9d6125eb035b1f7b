"""The TypedDicts of ``meshctl.dataplane_config`` name exactly the fields the
Rust decoder knows, section by section: a field added on one side only fails
here. The decoder says which fields it knows when it meets an unknown one."""

from __future__ import annotations

from typing import Any

import pytest

from meshctl import ConfigError, validate_config
from meshctl import dataplane_config as dp

#: An unknown field `zz` in every section of one document.
ROUTE = {
    "zz": 1,
    "match": {"zz": 1},
    "backends": [{"cluster": "c", "zz": 1}],
    "request_headers": {"zz": 1},
    "rewrite": {"zz": 1},
    "retry": {"zz": 1, "backoff": {"zz": 1}},
    "fault": {"zz": 1, "delay": {"zz": 1}, "abort": {"zz": 1}},
    "mirrors": [{"zz": 1, "cluster": "c"}],
    "rate_limit": {"zz": 1, "total": {"zz": 1, "rps": 1}, "overrides": [{"zz": 1, "rps": 1}]},
}
LISTENER = {
    "zz": 1,
    "name": "l",
    "address": "127.0.0.1:1",
    "routes": [ROUTE, {"redirect": {"zz": 1, "host": "a"}}],
    "tls": {"zz": 1, "mode": "simple", "certificates": [{"zz": 1}]},
    "authorization": {"zz": 1, "rules": [{"zz": 1, "action": "allow"}]},
    "egress": {"zz": 1, "policy": "allow_any", "connect": [{"zz": 1, "host": "a", "port": 1}]},
}
CLUSTER = {
    "zz": 1,
    "name": "c",
    "endpoints": [{"address": "127.0.0.1:2", "zz": 1}],
    "outlier_detection": {"zz": 1},
    "health_check": {"zz": 1, "type": "tcp"},
    "locality": {"zz": 1, "zone": "z"},
    "circuit_breakers": {"zz": 1},
    "retry_budget": {"zz": 1},
    "tls": {"zz": 1, "peer_ids": ["spiffe://td/x"]},
}
DOCUMENT = {
    "zz": 1,
    "admin": {"address": "127.0.0.1:3", "zz": 1},
    "identity": {"zz": 1},
    "listeners": [LISTENER],
    "clusters": [CLUSTER],
    "dns": {"address": "127.0.0.1:4", "zz": 1},
}

SECTIONS: dict[str, Any] = {
    "zz": dp.DataPlaneConfig,
    "admin.zz": dp.AdminConfig,
    "identity.zz": dp.IdentityConfig,
    "listeners[0].zz": dp.ListenerConfig,
    "listeners[0].routes[0].zz": dp.RouteConfig,
    "listeners[0].routes[0].match.zz": dp.MatchConfig,
    "listeners[0].routes[0].backends[0].zz": dp.BackendConfig,
    "listeners[0].routes[0].request_headers.zz": dp.HeaderModifier,
    "listeners[0].routes[0].rewrite.zz": dp.RewriteConfig,
    "listeners[0].routes[0].retry.zz": dp.RetryConfig,
    "listeners[0].routes[0].retry.backoff.zz": dp.BackoffConfig,
    "listeners[0].routes[0].fault.zz": dp.FaultConfig,
    "listeners[0].routes[0].fault.delay.zz": dp.FaultDelay,
    "listeners[0].routes[0].fault.abort.zz": dp.FaultAbort,
    "listeners[0].routes[0].mirrors[0].zz": dp.MirrorConfig,
    "listeners[0].routes[0].rate_limit.zz": dp.RateLimitConfig,
    "listeners[0].routes[0].rate_limit.total.zz": dp.RateLimitBucket,
    "listeners[0].routes[0].rate_limit.overrides[0].zz": dp.RateLimitOverride,
    "listeners[0].routes[1].redirect.zz": dp.RedirectConfig,
    "listeners[0].tls.zz": dp.ListenerTls,
    "listeners[0].tls.certificates[0].zz": dp.CertificateConfig,
    "listeners[0].authorization.zz": dp.AuthorizationConfig,
    "listeners[0].authorization.rules[0].zz": dp.AuthorizationRule,
    "listeners[0].egress.zz": dp.EgressConfig,
    "listeners[0].egress.connect[0].zz": dp.ConnectRule,
    "clusters[0].zz": dp.ClusterConfig,
    "clusters[0].endpoints[0].zz": dp.EndpointConfig,
    "clusters[0].outlier_detection.zz": dp.OutlierDetectionConfig,
    "clusters[0].health_check.zz": dp.HealthCheckConfig,
    "clusters[0].locality.zz": dp.LocalityConfig,
    "clusters[0].circuit_breakers.zz": dp.CircuitBreakersConfig,
    "clusters[0].retry_budget.zz": dp.RetryBudgetConfig,
    "clusters[0].tls.zz": dp.ClusterTls,
    "dns.zz": dp.DnsConfig,
}


def test_every_section_names_the_fields_the_decoder_knows() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_config(DOCUMENT)
    errors = dict(exc.value.errors)
    for path, typed in SECTIONS.items():
        assert errors[path].startswith("unknown field (expected one of: "), (path, errors[path])
        known = set(errors[path].removeprefix("unknown field (expected one of: ").removesuffix(")").split(", "))
        assert known == typed.__required_keys__ | typed.__optional_keys__, path


def test_required_fields_are_the_ones_the_decoder_requires() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_config(
            {"listeners": [{"tls": {}, "authorization": {"rules": [{}]}}], "clusters": [{"tls": {}}], "dns": {}}
        )
    required = {path for path, message in exc.value.errors if message == "required"}
    assert required == {
        "listeners[0].name",
        "listeners[0].address",
        "listeners[0].routes",  # an http listener's (the default protocol)
        "listeners[0].tls.mode",
        "listeners[0].authorization.rules[0].action",
        "clusters[0].name",
        "clusters[0].endpoints",
        "clusters[0].tls.peer_ids",
        "dns.address",
    }
    assert dp.ListenerConfig.__required_keys__ == {"name", "address"}
    assert dp.ListenerTls.__required_keys__ == {"mode"}
    assert dp.AuthorizationRule.__required_keys__ == {"action"}
    # endpoints: required unless original_destination; ClusterTls: peer_ids, or server_name and a CA.
    assert dp.ClusterConfig.__required_keys__ == {"name"}
    assert dp.ClusterTls.__required_keys__ == set()
    assert dp.EgressConfig.__required_keys__ == {"policy"}
    assert dp.ConnectRule.__required_keys__ == {"host", "port"}
    assert dp.BackendConfig.__required_keys__ == {"cluster"}
    assert dp.EndpointConfig.__required_keys__ == {"address"}
    assert dp.AdminConfig.__required_keys__ == {"address"}
    assert dp.DnsConfig.__required_keys__ == {"address"}
