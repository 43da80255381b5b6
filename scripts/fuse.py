"""Fuse the outputs of several completed runs (two rerankers, say) into one ranking: each input's score
per pair, joined on (query_id, doc_id), fused by reciprocal rank fusion or a weighted mean of per-query
normalized scores, into final_score and final_rank (1 the best in its query). A pair one input lacks
gets nothing from that input.

Each input is [NAME=]RUN_OR_FILE: a run id from the ledger (its finished corpus shards) or a scores
Parquet file or dataset, local or a URI; NAME (default: in1, in2, ...) names its column score_NAME and its
weight in --weights.

Exit codes: 0 written; 2 bad flags, an unknown run or an unreadable file; 3 storage unreachable.

Examples:
  python scripts/fuse.py minilm=20261201-020000-ab12cd bge=20261201-020500-cd34ef --fuse rrf \
      --out fused.parquet
  python scripts/fuse.py a.parquet b.parquet --fuse weighted --weights in1=0.3,in2=0.7 --out fused.parquet
"""

from __future__ import annotations

import argparse
import json
import re
import sys

import pyarrow.compute as pc

from core.errors import RerankError, StorageUnreachableError
from core.score_transforms import NORMALIZATIONS
from core.settings import get_settings
from producer.comparison import load_side
from producer.fusion import DEFAULT_RRF_K, FUSIONS
from producer.output_fusion import NamedSide, fuse_outputs
from producer.ranking_recipe import RankingRecipe, Source, parse_weights
from storage.location import location_of
from storage.shards.scores import METADATA_KEY, write_scores

EXIT_OK, EXIT_BAD_INPUT, EXIT_UNREACHABLE = 0, 2, 3
_NAMED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.+)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", metavar="[NAME=]RUN_OR_FILE", help="two or more runs or files")
    parser.add_argument("--fuse", choices=FUSIONS, required=True, help="how to fuse the scores")
    parser.add_argument("--out", required=True, help="the Parquet file to write (a local path or a URI)")
    parser.add_argument("--weights", metavar="NAME=W,...", help="the inputs' weights (default: 1 each)")
    parser.add_argument("--rrf-k", type=float, default=DEFAULT_RRF_K, help="k of rrf (default: %(default)s)")
    parser.add_argument(
        "--normalize",
        choices=NORMALIZATIONS,
        default="minmax",
        help="per-query normalization of each score before --fuse weighted (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    try:
        named = [_NAMED.fullmatch(text) for text in args.inputs]
        names = [m.group(1) if m else f"in{i}" for i, m in enumerate(named, start=1)]
        targets = [m.group(2) if m else text for m, text in zip(named, args.inputs, strict=True)]
        # The recipe checks the names and weights as submit.py checks its sources'.
        recipe = RankingRecipe(
            sources=tuple(Source(name, target) for name, target in zip(names, targets, strict=True)),
            fuse=args.fuse,
            rrf_k=args.rrf_k,
            weights=parse_weights(args.weights),
            source_normalize=args.normalize,
            rerank_weight=0.0,
        )
        out = location_of(args.out, settings)
        if out.is_local and not out.parent.is_dir():
            raise RerankError(f"--out {out.uri}: directory {out.parent.uri} does not exist")
        out.parent.check_container()
        inputs = [
            NamedSide(name, load_side(target, settings), recipe.weight_of(name))
            for name, target in zip(names, targets, strict=True)
        ]
        fused = fuse_outputs(inputs, args.fuse, args.rrf_k, args.normalize)
    except StorageUnreachableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except RerankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    metadata = {
        "fused": [{"name": n.name, "input": n.side.label, "model": n.side.model} for n in inputs],
        "ranking": recipe.as_options(),
        "columns": fused.columns,
    }
    table = fused.table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    write_scores(table, out)
    queries = pc.count_distinct(fused.table["query_id"]).as_py()
    print(f"wrote {fused.table.num_rows:,} fused pairs of {queries:,} queries to {out.uri}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
