"""Create or upgrade tenants' datasets, tables and views in a real project: ``python -m shared.warehouse.provision
[TENANT ...]``.

The same ``provision_dataset`` that ``landline tenant add`` runs on the local stack, for a deployment: with
application default credentials, ``LANDLINE_PROJECT`` and the tenants the functions read (``LANDLINE_TENANTS_FILE``
or ``LANDLINE_TENANTS_JSON``). Idempotent; run it after ``terraform apply`` and after every upgrade (it adds the
columns a new version writes and replaces outdated views). No tenant named: every tenant.
"""

from __future__ import annotations

import sys

from shared.config import settings, tenants
from shared.errors import SetupError
from shared.warehouse.client import bigquery_client, provision_dataset


def provision(names: list[str]) -> list[str]:
    """Provision the named tenants (all if none); returns what it provisioned, in order."""
    registry = tenants()
    chosen = [registry.get(name) for name in names] if names else registry.all()
    client = bigquery_client()
    for tenant in chosen:
        provision_dataset(client, tenant)
    return [t.name for t in chosen]


def main(argv: list[str] | None = None) -> int:
    try:
        done = provision(list(sys.argv[1:] if argv is None else argv))
    except SetupError as exc:
        print(f"provision: {exc}", file=sys.stderr)
        return 1
    for name in done:
        print(f"provisioned {name} in project {settings().project}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
