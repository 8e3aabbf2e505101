"""``superkern env``: versions, GPU and backend availability."""
import json


def register(sub) -> None:
    p = sub.add_parser("env", help="versions, GPU, and which backends are usable (and why not)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from superkern.env import env_info, format_env

    info = env_info()
    print(json.dumps(info, indent=2) if args.json else format_env(info))
    return 0
