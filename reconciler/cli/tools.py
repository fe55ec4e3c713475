"""Trying it out: the bundled `simulator` and the `demo`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from reconciler.cli import options
from reconciler.cli.options import EXIT_OK, env


def register(sub: Any) -> None:
    from reconciler.simulator.__main__ import parser as simulator_options

    p = sub.add_parser("simulator", help="serve a simulated Jenkins on 127.0.0.1 until stopped",
                       parents=[simulator_options(add_help=False)], formatter_class=options.Formatter,
                       description="A Jenkins stand-in speaking Jenkins' remote API: jobs, parameters, tokens, "
                                   "CSRF crumbs, the queue, builds, consoles; with faults injectable at run time "
                                   "through /_sim/faults. See README, 'The Jenkins simulator'.",
                       epilog="example: reconciler simulator --port 8080 --version 2.528.1 --job deploy "
                              "--user alice:alice-token")
    p.set_defaults(port=int(env("sim_port", 8080)), config=env("sim_config"), quiet=False, verbose=False)
    p.set_defaults(func=cmd_simulator)

    p = options.parser(sub, "demo", help="run the daemon on ./triggers against a bundled simulator",
                       description="Start a simulated Jenkins on a free loopback port and run the daemon on the "
                                   "example specs against it, showing each fire decided, posted, started and "
                                   "completed.",
                       epilog="example: reconciler demo --keep-running")
    p.add_argument("--triggers", type=Path, default=Path(env("triggers", "triggers")),
                   help="directory of trigger specs (default ./triggers)")
    p.add_argument("--workdir", type=Path, default=Path(".reconciler/demo"),
                   help="where the demo keeps its state and history (wiped at start)")
    p.add_argument("--keep-running", action="store_true", help="keep watching after the demo runs complete")
    options.add_logging(p)
    p.set_defaults(func=cmd_demo)

    p = options.parser(sub, "completion", help="print shell completion for bash, zsh or fish",
                       description="The completion script of a shell, to source from its startup file: commands, "
                                   "options and their choices complete on TAB (through argcomplete).",
                       epilog="examples: reconciler completion bash > ~/.local/share/bash-completion/completions/"
                              "reconciler\n"
                              "          reconciler completion zsh > \"${fpath[1]}/_reconciler\"\n"
                              "          reconciler completion fish > ~/.config/fish/completions/reconciler.fish")
    p.add_argument("shell", choices=("bash", "zsh", "fish"))
    p.set_defaults(func=cmd_completion)


def cmd_simulator(args: argparse.Namespace) -> int:
    from reconciler.simulator.__main__ import serve

    return serve(args)


def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete

    print(argcomplete.shellcode(["reconciler"], shell=args.shell), end="")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from reconciler.cli.demo import run_demo

    return run_demo(args.triggers, args.workdir, keep_running=args.keep_running)
