"""What a run does with its scores after scoring (``submit.py --normalize/--source/--fuse``): checked
in full before anything is enqueued, and kept in the run's options in the ledger."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from core.errors import RerankError
from core.score_transforms import NORMALIZATIONS, SCOPES, Normalization, Scope
from producer.fusion import DEFAULT_RRF_K, FUSIONS, METRICS, Fusion, Metric

OPTIONS_KEY = "ranking"
DEFAULT_RERANK_WEIGHT = 0.5
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class RecipeError(RerankError):
    """A ranking recipe that cannot work (an unknown column, a weight that is not a number, ...)."""


@dataclass(frozen=True)
class Source:
    """A first-stage column of the corpus: ``name`` in the output (``source_<name>``), the corpus
    ``column`` it comes from, and what its values are."""

    name: str
    column: str
    metric: Metric = "score"

    @property
    def output_column(self) -> str:
        return f"source_{self.name}"

    @classmethod
    def parse(cls, text: str) -> Source:
        """``NAME=COLUMN[:cosine|l2|ip|rank]``."""
        name, equals, rest = text.partition("=")
        column, colon, metric = rest.rpartition(":") if ":" in rest else (rest, "", "score")
        usage = f"--source {text}: give NAME=COLUMN[:{'|'.join(m for m in METRICS if m != 'score')}]"
        if not equals or not column or not _NAME.fullmatch(name):
            raise RecipeError(f"{usage} (NAME: letters, digits and _)")
        if colon and metric not in METRICS:
            raise RecipeError(f"{usage}; {metric!r} is no metric")
        return cls(name, column, cast(Metric, metric))


@dataclass(frozen=True)
class RankingRecipe:
    """Empty (the default) means the output holds the model's raw scores and ranks only."""

    normalize: Normalization | None = None
    normalize_over: Scope = "query"
    sources: tuple[Source, ...] = ()
    fuse: Fusion | None = None
    rrf_k: float = DEFAULT_RRF_K
    weights: tuple[tuple[str, float], ...] = field(default=())
    rerank_weight: float = DEFAULT_RERANK_WEIGHT
    source_normalize: Normalization = "minmax"

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise RecipeError(problems[0] if len(problems) == 1 else "; ".join(problems))

    @property
    def empty(self) -> bool:
        return self.normalize is None and not self.sources

    @property
    def carried_columns(self) -> tuple[str, ...]:
        """The corpus columns the shard inputs must carry, once each."""
        return tuple(dict.fromkeys(source.column for source in self.sources))

    def weight_of(self, name: str) -> float:
        return dict(self.weights).get(name, 1.0)

    def as_options(self) -> dict[str, Any]:
        return {
            "normalize": self.normalize,
            "normalize_over": self.normalize_over,
            "sources": [[s.name, s.column, s.metric] for s in self.sources],
            "fuse": self.fuse,
            "rrf_k": self.rrf_k,
            "weights": dict(self.weights),
            "rerank_weight": self.rerank_weight,
            "source_normalize": self.source_normalize,
        }

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> RankingRecipe:
        if not options:
            return cls()
        return cls(
            normalize=options.get("normalize"),
            normalize_over=options.get("normalize_over", "query"),
            sources=tuple(
                Source(name, column, metric) for name, column, metric in options.get("sources", [])
            ),
            fuse=options.get("fuse"),
            rrf_k=float(options.get("rrf_k", DEFAULT_RRF_K)),
            weights=tuple((name, float(weight)) for name, weight in options.get("weights", {}).items()),
            rerank_weight=float(options.get("rerank_weight", DEFAULT_RERANK_WEIGHT)),
            source_normalize=options.get("source_normalize", "minmax"),
        )

    def _problems(self) -> list[str]:
        problems: list[str] = []
        if self.normalize is not None and self.normalize not in NORMALIZATIONS:
            problems.append(f"--normalize {self.normalize}: choose one of {', '.join(NORMALIZATIONS)}")
        if self.normalize is None and self.normalize_over != "query":
            problems.append(f"--normalize-over {self.normalize_over} needs --normalize METHOD")
        if self.normalize_over not in SCOPES:
            problems.append(f"--normalize-over {self.normalize_over}: choose one of {', '.join(SCOPES)}")
        if self.source_normalize not in NORMALIZATIONS:
            problems.append(
                f"--source-normalize {self.source_normalize}: choose one of {', '.join(NORMALIZATIONS)}"
            )
        names = [source.name for source in self.sources]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            problems.append(f"--source {', '.join(repeated)} is given twice; give each source one name")
        if self.fuse is not None:
            if self.fuse not in FUSIONS:
                problems.append(f"--fuse {self.fuse}: choose one of {', '.join(FUSIONS)}")
            if not self.sources:
                problems.append(f"--fuse {self.fuse} needs at least one --source NAME=COLUMN to fuse with")
        elif self.weights:
            problems.append("--fusion-weights applies to a fusion: add --fuse rrf or --fuse weighted")
        ranked = [source.name for source in self.sources if source.metric == "rank"]
        if self.fuse == "weighted" and ranked:
            problems.append(
                f"--fuse weighted cannot use the rank source{'s' if len(ranked) > 1 else ''} "
                f"{', '.join(ranked)}: a rank is no score; fuse ranks with --fuse rrf, or name the source's "
                "score or distance column (with :cosine, :l2 or :ip)"
            )
        for name, weight in self.weights:
            if name not in names:
                problems.append(f"--fusion-weights {name}={weight}: no --source is named {name!r}")
            if not (math.isfinite(weight) and weight >= 0):
                problems.append(f"--fusion-weights {name}={weight}: a weight is a number of at least 0")
        if self.fuse is not None and self.sources and sum(self.weight_of(n) for n in names) <= 0:
            problems.append("--fusion-weights: the sources' weights add up to 0")
        if not (math.isfinite(self.rerank_weight) and 0 <= self.rerank_weight <= 1):
            problems.append(f"--rerank-weight {self.rerank_weight}: give a number from 0 to 1")
        if not (math.isfinite(self.rrf_k) and self.rrf_k > 0):
            problems.append(f"--rrf-k {self.rrf_k}: give a number above 0")
        return problems


def parse_weights(text: str | None) -> tuple[tuple[str, float], ...]:
    """``NAME=W,NAME=W``: each weight must be a number."""
    if not text:
        return ()
    weights: list[tuple[str, float]] = []
    for item in text.split(","):
        name, equals, value = item.strip().partition("=")
        if not equals or not name.strip():
            raise RecipeError(f"--fusion-weights {text}: give NAME=WEIGHT[,NAME=WEIGHT...]; {item!r} is not")
        try:
            weight = float(value)
        except ValueError:
            raise RecipeError(
                f"--fusion-weights {text}: the weight {value.strip()!r} of {name.strip()} is not a number"
            ) from None
        weights.append((name.strip(), weight))
    return tuple(weights)


def recipe_from_flags(
    normalize: str | None,
    normalize_over: str,
    sources: Sequence[str],
    fuse: str | None,
    rrf_k: float,
    weights: str | None,
    rerank_weight: float,
    source_normalize: str,
) -> RankingRecipe:
    """The recipe the command-line flags describe; ``RecipeError`` names the first thing wrong."""
    return RankingRecipe(
        normalize=cast(Normalization | None, normalize),
        normalize_over=cast(Scope, normalize_over),
        sources=tuple(Source.parse(text) for text in sources),
        fuse=cast(Fusion | None, fuse),
        rrf_k=rrf_k,
        weights=parse_weights(weights),
        rerank_weight=rerank_weight,
        source_normalize=cast(Normalization, source_normalize),
    )
