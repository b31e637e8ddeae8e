from pathlib import Path

import pytest
import yaml

from linli.permissions import USERS, password_variable
from linli.system import SERVICES

pytestmark = pytest.mark.domain
ROOT = Path(__file__).resolve().parent.parent


def test_compose_runs_every_service_on_real_nats_and_mongo() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(SERVICES) <= set(services)
    assert services["nats"]["image"].startswith("nats:")
    assert services["mongo"]["image"].startswith("mongo:")
    for name in SERVICES:
        assert services[name]["command"] == ["python", "-m", f"services.{name}"]
        env = services[name]["environment"]
        # each service signs in as itself (linli/permissions.py), with the password compose is given
        assert env["NATS_URL"] == f"nats://{name}:${{LINLI_{name.upper()}_PASSWORD}}@nats:4222"
        assert env["MONGO_URL"].startswith("mongodb://mongo:")
    assert services["matcher"]["deploy"]["replicas"] >= 2


def test_containers_are_given_time_to_close_their_connections_before_a_kill() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    for name in SERVICES:
        service = compose["services"][name]
        grace = float(service["stop_grace_period"].removesuffix("s"))
        # a stop waits up to LINLI_STOP_TIMEOUT for the NATS drain, then as long for the database
        assert grace > 2 * float(service["environment"]["LINLI_STOP_TIMEOUT"]), name


def test_nats_is_not_published_on_the_host_and_knows_every_users_password() -> None:
    nats = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["nats"]
    assert not [port for port in nats.get("ports", []) if "4222" in str(port)]
    assert all(str(port).startswith("127.0.0.1:") for port in nats.get("ports", []))
    assert set(nats["environment"]) == {password_variable(name) for name in USERS}


def test_production_nats_fsyncs_every_write() -> None:
    config = (ROOT / "deploy" / "nats.conf").read_text()
    assert "sync_interval: always" in config and "store_dir" in config


def test_every_service_module_can_be_started_with_python_m() -> None:
    for name in SERVICES:
        assert (ROOT / "services" / name / "__main__.py").exists()


def test_every_service_is_healthy_only_when_its_own_process_answers_a_call() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    for name in SERVICES:
        service = compose["services"][name]
        check = service["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL" and check[1].startswith(f"linli health {name} --instance"), name
        assert "$$HOSTNAME" in check[1], "$$ leaves $HOSTNAME to the container's shell, so each replica checks itself"
        assert service["restart"] == "unless-stopped"
    for server in ("nats", "mongo"):
        assert compose["services"][server]["healthcheck"]["test"], server
        assert compose["services"][server]["restart"] == "unless-stopped"
    assert compose["services"]["intake"]["depends_on"]["nats"]["condition"] == "service_healthy"


def test_the_web_signs_in_as_itself_and_is_published_on_this_host_only() -> None:
    web = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["web"]
    assert web["command"] == ["python", "-m", "services.web"]
    assert web["environment"]["NATS_URL"] == "nats://web:${LINLI_WEB_PASSWORD}@nats:4222"
    assert web["ports"] == ["127.0.0.1:8080:8080"] and web["environment"]["LINLI_WEB_PORT"] == "8080"
    assert "/healthz" in " ".join(web["healthcheck"]["test"])
