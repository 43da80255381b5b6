"""Start reranker workers on this machine: one Celery worker process per GPU, N CPU workers, or API
workers that score through a hosted rerank API under the fleet's shared rate limits.

Examples:
  python scripts/workers.py --model cross-encoder:cross-encoder/ms-marco-MiniLM-L6-v2 --gpus all
  python scripts/workers.py --model all-MiniLM-L6-v2 --cpu 2
  python scripts/workers.py --api cohere --model rerank-v3.5 --concurrency 8
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from core.broker import resolve_broker_url
from core.errors import BrokerError, RerankError, StorageUnreachableError
from core.kinds import API_KINDS, LOCAL_KINDS
from core.model_spec import ModelSpec
from core.reach import local_only_warning
from core.settings import api_variable, get_settings
from storage.location import data_location
from worker.fleet.launcher import (
    Fleet,
    WorkerProcess,
    parse_gpus,
    plan_api_fleet,
    plan_fleet,
    visible_gpu_count,
)

EXIT_USAGE = 2
EXIT_BROKER = 3
DEFAULT_API_CONCURRENCY = 8


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=api_kinds_help(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        required=True,
        help=f"reranker to host: kind:name with kind {', '.join(LOCAL_KINDS)} (a Hugging Face id or a local "
        "path), or an API kind (cohere:rerank-v3.5, ...); a bare name is detected from a local model dir; "
        "with --api, the model the API serves",
    )
    parser.add_argument(
        "--api",
        choices=list(API_KINDS),
        metavar="KIND",
        help="score through this API instead of a local model (--model names the served model); "
        "KIND is one of the API kinds below",
    )
    placement = parser.add_mutually_exclusive_group()
    placement.add_argument("--gpus", help="'all' or GPU indices like 0,1: one worker process per GPU")
    placement.add_argument("--cpu", type=int, metavar="N", help="start N CPU worker processes")
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help=f"API workers: shards and HTTP requests each process keeps in flight "
        f"(default {DEFAULT_API_CONCURRENCY})",
    )
    parser.add_argument(
        "--processes", type=int, metavar="P", help="API workers: worker processes to start (default 1)"
    )
    parser.add_argument("--hostname", default=socket.gethostname(), help="node name suffix (default: host)")
    return parser


def api_kinds_help() -> str:
    """The API kinds of ``core.kinds``, each with whether it needs a key, its default request size, and
    the variables (with the default base URL) that configure it."""
    width = max(len(kind) for kind in API_KINDS)
    indent = " " * (width + 4)
    lines = ["API kinds (--api KIND) and the variables that configure each:"]
    for entry in API_KINDS.values():
        key = "key required" if entry.requires_key else "key optional"
        documents = entry.limits.max_documents
        lines += [
            f"  {entry.kind:<{width}}  {entry.summary}; {key}; "
            f"{documents:,} document{'s' if documents > 1 else ''} a request",
            f"{indent}{api_variable(entry.kind, 'base_url')} (default {entry.base_url})",
            f"{indent}{api_variable(entry.kind, 'api_key')} or {api_variable(entry.kind, 'api_key_file')}",
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s workers: %(message)s")
    try:
        spec = _model_spec(args)
        _check_placement(args, spec)
        if spec.is_api:
            from worker.backends.api import check_api_config

            check_api_config(spec, settings)
        gpus = parse_gpus(args.gpus, visible_gpu_count()) if args.gpus else None
        data_location(settings).check_container()
        broker_url = resolve_broker_url(settings)
    except RerankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        unreachable = isinstance(exc, BrokerError | StorageUnreachableError)
        return EXIT_BROKER if unreachable else EXIT_USAGE
    warning = local_only_warning(settings)
    if warning:
        print(warning, file=sys.stderr)
    processes: list[WorkerProcess]
    if spec.is_api:
        concurrency = args.concurrency or DEFAULT_API_CONCURRENCY
        processes = plan_api_fleet(
            spec, args.processes or 1, concurrency, broker_url, args.hostname, settings.log_level
        )
    else:
        processes = plan_fleet(
            spec,
            gpus,
            args.cpu or 0,
            broker_url,
            args.hostname,
            settings.log_level,
            inherited_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
            shards_in_flight=settings.shards_in_flight,
        )
    print(
        f"starting {len(processes)} worker(s) for {spec} on queue {spec.queue}: "
        + ", ".join(p.name for p in processes),
        file=sys.stderr,
        flush=True,
    )
    fleet = Fleet(processes)
    fleet.start()
    return fleet.wait()


def _model_spec(args: argparse.Namespace) -> ModelSpec:
    """``--model``, or ``--api KIND --model NAME`` (NAME may also repeat the kind: ``KIND:NAME``)."""
    if args.api is None:
        return ModelSpec.parse(args.model)
    name = args.model.removeprefix(f"{args.api}:")
    return ModelSpec.parse(f"{args.api}:{name}")


def _check_placement(args: argparse.Namespace, spec: ModelSpec) -> None:
    for flag, value in (
        ("--cpu", args.cpu),
        ("--concurrency", args.concurrency),
        ("--processes", args.processes),
    ):
        if value is not None and value < 1:
            raise RerankError(f"{flag} must be at least 1")
    if spec.is_api:
        if args.gpus is not None or args.cpu is not None:
            raise RerankError(
                f"{spec} is scored by an API: drop --gpus/--cpu and use --concurrency N (and --processes P)"
            )
        return
    if args.concurrency is not None or args.processes is not None:
        raise RerankError("--concurrency and --processes are for API workers; use --gpus or --cpu N")
    if args.gpus is None and args.cpu is None:
        raise RerankError(f"{spec} runs locally: give --gpus all|0,1 or --cpu N")


if __name__ == "__main__":
    sys.exit(main())
