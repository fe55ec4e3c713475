"""The floor for change → POST: read the directory's inotify events as they come and POST at once.

No state, no history, no validation: what no real tool can beat. Usage:
    python bench/floor.py DIR JENKINS_URL USER TOKEN
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import requests
from inotify_simple import INotify
from inotify_simple import flags as f
from ruamel.yaml import YAML


def main() -> None:
    directory, url, user, token = sys.argv[1:5]
    session = requests.Session()
    session.auth = (user, token)
    yaml = YAML(typ="safe")
    inotify = INotify()
    inotify.add_watch(directory, f.CLOSE_WRITE | f.MOVED_TO)
    print("ready", flush=True)
    while True:
        for event in inotify.read():
            if not event.name.endswith(".yaml") or event.name.startswith("."):
                continue
            try:
                spec = yaml.load(Path(os.path.join(directory, event.name)).read_text())
            except (OSError, ValueError):
                continue
            session.post(f"{url}job/{spec['job']}/buildWithParameters", data=spec.get("parameters") or {})


if __name__ == "__main__":
    main()
