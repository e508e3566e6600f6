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
    helps: dict[str, str] = {}
    for service, specs in SERVICES.items():
        for spec in specs:
            defaults.setdefault(spec.env, {})[service] = _shown(spec.default)
            # A setting that several services share gets the first service's description.
            helps.setdefault(spec.env, spec.help)
    lines = ["| variable | services | default | meaning |", "|---|---|---|---|"]
    for env, per_service in defaults.items():
        who = "all" if len(per_service) == len(SERVICES) else ", ".join(per_service)
        values = set(per_service.values())
        shown = values.pop() if len(values) == 1 else "; ".join(f"{s} {v}" for s, v in per_service.items())
        lines.append(f"| `{env}` | {who} | {shown} | {helps[env]} |")
    return lines


if __name__ == "__main__":
    print("\n".join(rows()))
