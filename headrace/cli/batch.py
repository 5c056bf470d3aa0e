"""`headrace batch INPUT.jsonl -o OUTPUT.jsonl`: a batch input file run offline on the same
engine, with a progress bar."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from headrace.cli.flags import configure_logging, engine_config, model_config
from headrace.config import EngineConfig, ModelConfig

if TYPE_CHECKING:
    from headrace.batch.offline import OfflineInput, OfflineSummary

__all__ = ["add_parser", "run"]

logger = logging.getLogger("headrace")


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    model_flags: argparse.ArgumentParser,
) -> None:
    """The `batch` subcommand: `model_flags`, the input and the output."""
    batch = commands.add_parser(
        "batch",
        parents=[model_flags],
        help="run a batch input file offline, on the same engine",
        description="Run an OpenAI Batch API input file in this process, twice --max-num-seqs "
        "requests at once, and write every result to OUTPUT in input order.",
    )
    batch.add_argument(
        "input",
        type=Path,
        metavar="INPUT.jsonl",
        help="one request a line ({custom_id, method: POST, url, body}), every url the first "
        "line's: /v1/chat/completions or /v1/completions",
    )
    batch.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUTPUT.jsonl",
        help="the result of each request, failed ones too, a line each in input order; "
        "replaced only once every request has its line",
    )
    batch.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """Checks the input file, then loads the model and runs every request of it to the output
    file; a bad file is each of its errors on stderr and exit status 1, before any loading."""
    from headrace.batch.offline import read_input

    configure_logging(args)
    models, engine = model_config(args), engine_config(args)
    source, output = args.input.expanduser(), args.output.expanduser()
    if not source.is_file():
        raise ValueError(f"there is no batch input file at {source}")
    if output.is_dir() or not output.parent.is_dir():
        raise ValueError(f"cannot write the output to {output}: not a file in a directory")
    try:
        batch = read_input(source)
    except OSError as error:
        raise ValueError(f"cannot read {source}: {error.strerror}") from None
    if batch.errors:
        for problem in batch.errors:
            where = f"{source}:{problem.line}" if problem.line is not None else f"{source}"
            print(f"{where}: {problem.code}: {problem.message}", file=sys.stderr)
        print(f"headrace: error: {source} is not a valid batch input file", file=sys.stderr)
        raise SystemExit(1)
    logger.info("%d requests to %s from %s", len(batch.lines), batch.endpoint, source)
    try:
        summary = _run_batch(args, models, engine, batch, output)
    except KeyboardInterrupt:
        print(f"headrace: interrupted; {output} left as it was", file=sys.stderr)
        raise SystemExit(130) from None
    print(f"headrace: {summary.describe()}; results in {output}", file=sys.stderr)


def _run_batch(
    args: argparse.Namespace,
    model_config: ModelConfig,
    engine_config: EngineConfig,
    batch: OfflineInput,
    output: Path,
) -> OfflineSummary:
    """Loads the model and runs `batch` on its engine, with a progress bar."""
    from headrace.api.errors import status_of
    from headrace.batch.endpoints import Endpoints
    from headrace.batch.offline import run_offline
    from headrace.batch.progress import ProgressBar
    from headrace.serving import Services
    from headrace.serving.runtime import load_runtime

    runtime = load_runtime(model_config, engine_config)
    services = Services.of(runtime, tool_call_format=args.tool_call_parser)
    # As many again as the engine runs wait in its queue, to take a place the step it frees.
    concurrency = 2 * engine_config.max_num_seqs
    endpoints = Endpoints(services.chat, services.completions, status_of, concurrency=concurrency)

    async def run(progress: ProgressBar) -> OfflineSummary:
        runtime.engine.start()  # on this loop: it delivers tokens to it
        try:
            return await run_offline(
                endpoints,
                batch,
                output,
                concurrency=concurrency,
                on_done=progress.update,
            )
        finally:
            runtime.engine.shutdown()

    with ProgressBar(len(batch.lines)) as progress:
        return asyncio.run(run(progress))
