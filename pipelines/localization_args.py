"""The command-line flags that the localization pipelines (Aachen, InLoc) share."""

from pathlib import Path

from pipelines.hloc_steps import add_feature_args


def add_localization_args(parser, default_features: str, default_k: int):
    """Flags shared by the localization pipelines (Aachen, InLoc)."""
    add_feature_args(parser, default_features)
    parser.add_argument(
        "--matcher", default="NN-mutual", help="hloc matcher preset, default: %(default)s"
    )
    parser.add_argument(
        "--num-loc",
        type=int,
        default=default_k,
        help="retrieved database images per query, default: %(default)s (the TaSP paper used 20)",
    )
    parser.add_argument(
        "--retrieval",
        choices=["netvlad", "exhaustive"],
        default="netvlad",
        help="netvlad (top --num-loc) or exhaustive (every database image; "
        "small datasets only), default: %(default)s",
    )
    parser.add_argument(
        "--netvlad-weights",
        type=Path,
        help="local Pitts30K_struct.mat; default: hloc's torch hub cache path",
    )
    parser.add_argument(
        "--query-pairs",
        type=Path,
        action="append",
        metavar="FILE",
        help="given query-database pairs (`query db` per line, names relative "
        "to the image folder) for some or all queries, e.g. the official "
        "list for Aachen's night queries; database-database lines are "
        "skipped; the other queries use --retrieval. Repeatable.",
    )
    parser.add_argument("--results", type=Path, help="results file (default: under --outputs)")
