"""``python -m shared.warehouse.provision``: the deployment's way to create or upgrade tenants' tables."""

from __future__ import annotations

from typing import Any

import pytest

from shared.config import Tenant
from shared.errors import SetupError
from shared.warehouse import provision as module


class _Registry:
    def __init__(self, *tenants: Tenant) -> None:
        self._by_name = {t.name: t for t in tenants}

    def all(self) -> list[Tenant]:
        return list(self._by_name.values())

    def get(self, name: str) -> Tenant:
        if name not in self._by_name:
            raise SetupError(f"unknown tenant {name!r}", "register it with `landline tenant add`")
        return self._by_name[name]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made: list[str] = []
    acme = Tenant(name="acme", region="europe-west1", bucket="acme-bucket", dataset="acme_ds")
    beta = Tenant(name="beta", region="us-central1", bucket="beta-bucket", dataset="beta_ds")
    monkeypatch.setattr(module, "tenants", lambda: _Registry(acme, beta))
    monkeypatch.setattr(module, "bigquery_client", lambda: object())
    monkeypatch.setattr(module, "provision_dataset", lambda client, tenant: made.append(tenant.dataset))
    return made


def test_every_tenant_when_none_is_named(calls: list[str], capsys: Any) -> None:
    assert module.main([]) == 0
    assert calls == ["acme_ds", "beta_ds"]
    assert capsys.readouterr().out.count("provisioned") == 2


def test_only_the_named_tenants(calls: list[str]) -> None:
    assert module.main(["beta"]) == 0
    assert calls == ["beta_ds"]


def test_an_unknown_tenant_is_one_line_and_nothing_is_created(calls: list[str], capsys: Any) -> None:
    assert module.main(["acme", "nope"]) == 1
    assert calls == []
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "Fix:" in err
