"""Print the Markdown table of every service's PRIM_* settings for the README."""

from prim.auth.settings import SETTINGS as AUTH
from prim.edge.settings import SETTINGS as EDGE
from prim.presence.settings import SETTINGS as PRESENCE
from prim.router.settings import SETTINGS as ROUTER

SERVICES = {"auth": AUTH, "presence": PRESENCE, "router": ROUTER, "edge": EDGE}


def _shown(default: object) -> str:
    if isinstance(default, bool):
        # Shown as the environment variable spells it: true, not True.
        default = str(default).lower()
    if isinstance(default, tuple):
        default = ",".join(default)
    return f"`{default}`" if default not in ("", None) else "(empty)"


def rows() -> list[str]:
    defaults: dict[str, dict[str, str]] = {}
    helps: dict[str, dict[str, str]] = {}
    for service, specs in SERVICES.items():
        for spec in specs:
            defaults.setdefault(spec.env, {})[service] = _shown(spec.default)
            helps.setdefault(spec.env, {})[service] = spec.help
    lines = ["| variable | services | default | meaning |", "|---|---|---|---|"]
    for env, per_service in defaults.items():
        who = "all" if len(per_service) == len(SERVICES) else ", ".join(per_service)
        default = _per_service(per_service, "; ")
        lines.append(f"| `{env}` | {who} | {default} | {_per_service(helps[env], ' ')} |")
    return lines


def _per_service(values: dict[str, str], separator: str) -> str:
    """Join one setting's values across services: one value, or each with its services named."""
    services_by_value: dict[str, list[str]] = {}
    for service, value in values.items():
        services_by_value.setdefault(value, []).append(service)
    if len(services_by_value) == 1:
        return next(iter(services_by_value))
    return separator.join(
        f"{', '.join(services)}: {value}" for value, services in services_by_value.items()
    )


if __name__ == "__main__":
    print("\n".join(rows()))
