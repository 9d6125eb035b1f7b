"""Config validation as seen from Python: every problem, each with its field path."""

from __future__ import annotations

import pytest

import meshctl
from helpers import cluster, http_listener, route
from meshctl import ConfigError, DataPlane


def test_every_problem_is_listed_with_its_path() -> None:
    config = {
        "listeners": [
            http_listener("a", [route("api-v1")]),
            http_listener("b", [route("api-v1"), {"backends": [{"cluster": "api-v3"}]}], address="nowhere"),
        ],
        "clusters": [cluster("api-v1", ["127.0.0.1:1"], lb="fastest")],
    }
    with pytest.raises(ConfigError) as exc:
        DataPlane(config)
    errors = dict(exc.value.errors)
    assert errors["listeners[1].routes[1].backends[0].cluster"] == "unknown cluster 'api-v3'"
    assert "listeners[1].address" in errors
    assert errors["clusters[0].lb"].startswith("'fastest' is not one of")
    assert len(errors) == 3
    assert "listeners[1].routes[1].backends[0].cluster: unknown cluster 'api-v3'" in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_yaml_text_and_validate_only() -> None:
    meshctl.validate_config("listeners: []\nclusters: []\n")
    with pytest.raises(ConfigError, match="not a YAML/JSON document"):
        meshctl.validate_config("listeners: [")
    with pytest.raises(ConfigError, match=r"listeners\[0\]\.colour: unknown field"):
        meshctl.validate_config({"listeners": [{"name": "x", "address": "127.0.0.1:1", "routes": [], "colour": 1}]})


def test_admin_must_be_loopback() -> None:
    with pytest.raises(ConfigError, match=r"admin\.address: 0\.0\.0\.0:15000 is not a loopback address"):
        meshctl.validate_config({"admin": {"address": "0.0.0.0:15000"}})


def test_bind_failure_names_the_address(proxy) -> None:
    first = proxy({"listeners": [http_listener("a", [])]})
    taken = first.addresses()["a"]
    dp = DataPlane({"listeners": [http_listener("b", [], address=taken)]})
    with pytest.raises(meshctl.BindError, match=f"listener 'b': cannot bind {taken}"):
        dp.start()
    assert not dp.running


def test_config_is_redacted_and_lifecycle_errors(proxy) -> None:
    dp = proxy({"listeners": [http_listener("a", [])]})
    assert dp.config()["listeners"][0]["name"] == "a"
    with pytest.raises(RuntimeError, match="already running"):
        dp.start()
    dp.stop(0)
    assert not dp.running
    with pytest.raises(RuntimeError, match="stopped"):
        dp.update({"listeners": []})
