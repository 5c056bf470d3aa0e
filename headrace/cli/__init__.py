"""The `headrace` command.

`headrace serve`: configuration from flags and environment, then the app under uvicorn.

`headrace batch INPUT.jsonl -o OUTPUT.jsonl`: a batch input file run offline on the same engine,
with a progress bar.

`headrace keys create|list|revoke`: the API keys in the key store. These import neither torch nor
the server: what `serve` and `batch` need is imported when they run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence

from headrace.cli import batch, keys, serve
from headrace.cli.flags import model_flags

__all__ = ["entry", "main"]

logger = logging.getLogger("headrace")


def entry() -> None:
    """The `headrace` process: `main`, then an exit that waits for no background thread."""
    main()
    _exit_past_background_threads()


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except ValueError as exc:  # configuration and model-source errors: one line, no traceback
        print(f"headrace: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headrace", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    shared = model_flags()
    serve.add_parser(commands, shared)
    batch.add_parser(commands, shared)
    keys.add_parser(commands)
    return parser


def _exit_past_background_threads() -> None:
    """Ends the process at once if a daemon thread of headrace's is still at work: compiling
    the decode step, or building the C++ kernels. Neither can be stopped, and the interpreter's
    exit can abort (status 134) in torch's C++ under such a thread. Everything the command had
    to write is committed by now."""
    working = [
        thread.name
        for thread in threading.enumerate()
        if thread.daemon and thread.name.startswith("headrace-") and thread.is_alive()
    ]
    if working:
        logger.debug("exiting without waiting for %s", ", ".join(working))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
