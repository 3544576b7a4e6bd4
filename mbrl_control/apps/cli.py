"""``mbrl-control``: the command line (see DESIGN.md). Each subcommand lives in its own module
exposing ``add_arguments(parser)`` and ``main(args) -> int``; bad input exits 2 with one line."""

from __future__ import annotations

import argparse
import importlib
import sys

from mbrl_control import MbrlError, __version__

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("mbrl_control.apps.demo", "the ROS 2 node graph in real time on the default track (the main job)"),
    "sim": ("mbrl_control.apps.sim", "the closed loop offline, deterministic, faster than real time"),
    "bench": ("mbrl_control.apps.bench", "timing of one control step"),
    "fit": ("mbrl_control.apps.fit", "identify a model from a rosbag2 recording"),
    "replay": ("mbrl_control.apps.replay", "model error and controller commands along a recorded drive"),
    "tune": ("mbrl_control.apps.tune", "search controller parameters by closed-loop simulation"),
    "compile": ("mbrl_control.apps.compile", "generate and compile every kernel once (warms the on-disk caches)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line on stderr, exit code 2."""

    def error(self, message: str):  # noqa: D401
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="mbrl-control", description="Model-based control (MPPI, iLQR/DDP, online sysid) for ROS 2.")
    parser.add_argument("--version", action="version", version=f"mbrl-control {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            p.set_defaults(_unavailable=name)
            continue
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in SUBCOMMANDS else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code == 2:  # a usage error, already reported in one line: the same exit code as any bad input
            return 2
        raise  # --help, --version
    if getattr(args, "_unavailable", None):
        print(f"mbrl-control: error: '{args._unavailable}' is not available in this build", file=sys.stderr)
        return 2
    try:
        return int(args._main(args) or 0)
    except MbrlError as exc:
        print(f"mbrl-control: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be read or written (full disk, permissions): one line too
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"mbrl-control: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mbrl-control: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
