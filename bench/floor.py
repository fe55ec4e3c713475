"""The floor for change → POST: notice a write with inotify (via watchfiles) and POST at once.

No state, no history, no validation: what no real tool can beat. Usage:
    python bench/floor.py DIR JENKINS_URL USER TOKEN
"""

from __future__ import annotations

import sys
from pathlib import Path

import requests
import watchfiles
from ruamel.yaml import YAML


def main() -> None:
    directory, url, user, token = sys.argv[1:5]
    session = requests.Session()
    session.auth = (user, token)
    yaml = YAML(typ="safe")
    print("ready", flush=True)
    for changes in watchfiles.watch(directory, watch_filter=None, debounce=50, step=1):
        for _, path in changes:
            if not path.endswith(".yaml") or "/." in path:
                continue
            try:
                spec = yaml.load(Path(path).read_text())
            except (OSError, ValueError):
                continue
            session.post(f"{url}job/{spec['job']}/buildWithParameters", data=spec.get("parameters") or {})


if __name__ == "__main__":
    main()
