"""Which database images each query is matched to: NetVLAD top-k (hloc's
`pairs_from_retrieval`, with k clamped: hloc crashes in torch.topk when k exceeds the database),
every database image, or pairs given in files (`--query-pairs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from pipelines.common import done, logger, require_hloc
from pipelines.hloc_steps import check_pairs
from tasp_hloc.io.files import read_rows
from tasp_hloc.io.hloc_format import read_pairs, write_pairs


def retrieval_pairs(
    descriptors: Path, output: Path, k: int, query_names: Sequence[str], db_names: Sequence[str]
):
    """Top-k retrieval with hloc's `pairs_from_retrieval` (k clamped to the database size)."""
    require_hloc()
    from hloc import pairs_from_retrieval

    k = min(k, len(db_names))
    tmp = Path(output).with_name(Path(output).name + ".hloc.tmp")
    pairs_from_retrieval.main(
        descriptors, tmp, k, query_list=list(query_names), db_list=list(db_names)
    )
    # hloc writes no trailing newline; normalise and move into place atomically.
    write_pairs(read_pairs(tmp), output)
    tmp.unlink()


def exhaustive_pairs(query_names: Sequence[str], db_names: Sequence[str], output: Path):
    write_pairs([(q, d) for q in query_names for d in db_names], output)


def read_given_pairs(
    files: Sequence[Path], query_names: Sequence[str], db_names: Sequence[str]
) -> Dict[str, List[str]]:
    """{query: [database images]} from given pairs files (`name0 name1` per line, either order).

    Made for lists such as the official one of the Aachen v1.1 local-feature evaluation
    (`image_pairs_to_match_v1_1.txt`): its database-database lines are skipped (triangulation
    has its own pairs), every query-database line is kept. A name that is neither a query of the
    dataset nor a database image, or a line pairing two queries, stops with the file and line.
    """
    queries, dbs = set(query_names), set(db_names)
    given: Dict[str, List[str]] = {}
    skipped = 0
    for f in files:
        f = Path(f)
        if not f.is_file():
            raise FileNotFoundError(f"Query pairs file {f} does not exist.")
        for i, cols in read_rows(f, 2, "`query_name database_name`"):
            a, b = cols[:2]
            if a in queries and b in dbs:
                q, d = a, b
            elif b in queries and a in dbs:
                q, d = b, a
            elif a in dbs and b in dbs:
                skipped += 1
                continue
            elif a in queries and b in queries:
                raise ValueError(
                    f"{f}:{i}: pairs two query images ({a}, {b}); each line needs "
                    "a query and a database image."
                )
            else:
                raise ValueError(
                    _unknown_name_message(
                        f,
                        i,
                        [n for n in (a, b) if n not in queries | dbs][0],
                        query_names,
                        db_names,
                    )
                )
            if d not in given.setdefault(q, []):
                given[q].append(d)
    if skipped:
        logger.info(
            "Skipped %d database-database pairs of %s (triangulation uses its own).",
            skipped,
            ", ".join(map(str, files)),
        )
    if not given:
        raise ValueError(
            f"{', '.join(map(str, files))}: no line pairs a query with a database image."
        )
    return given


def _unknown_name_message(path, line, name, query_names, db_names) -> str:
    base = name.split("/")[-1]
    close = [n for n in list(query_names) + list(db_names) if n.split("/")[-1] == base]
    hint = f" Did you mean {close[0]!r}?" if len(close) == 1 else ""
    examples = ", ".join(repr(n) for n in (list(query_names)[:1] + list(db_names)[:1]))
    return (
        f"{path}:{line}: {name!r} is neither a query of the dataset's query list nor a "
        f"database image.{hint} Names are relative to the image folder, e.g. {examples}."
    )


def localization_paths(
    args, outputs: Path, tag: str, dataset_name: str, retrieval_needed: bool = True
) -> Tuple[Path, Path]:
    """(query pairs file, results file), named after the retrieval (and the given pairs files,
    `--query-pairs`); checks NetVLAD's weights before any work when they will be needed."""
    retrieval = f"netvlad{args.num_loc}" if args.retrieval == "netvlad" else "exhaustive"
    given = getattr(args, "query_pairs", None) or []
    if given:
        stem = "+".join(Path(f).stem for f in given)
        method = f"{stem}+{retrieval}" if retrieval_needed else stem
    else:
        method = retrieval
    loc_pairs = outputs / f"pairs-query-{method}.txt"
    results = (
        Path(args.results) if args.results else (outputs / f"{dataset_name}_{tag}_{method}.txt")
    )
    if retrieval_needed and args.retrieval == "netvlad" and not loc_pairs.exists():
        from pipelines.netvlad import check_weights

        check_weights(args.netvlad_weights, outputs)
    return loc_pairs, results


def query_pairs(
    args,
    image_dir: Path,
    outputs: Path,
    loc_pairs: Path,
    query_names: Sequence[str],
    db_names: Sequence[str],
    given: Optional[Mapping[str, Sequence[str]]] = None,
) -> Path:
    """The query-to-database pairs: NetVLAD top-k or exhaustive, computed once.

    With `given` ({query: [database images]}, from `--query-pairs`), those queries keep their
    given images and only the others are retrieved; the file lists the queries in the order of
    `query_names`.
    """
    given = dict(given or {})
    if not given:
        _retrieve(args, image_dir, outputs, loc_pairs, query_names, db_names)
        check_pairs(loc_pairs, "retrieval")
        return loc_pairs
    rest = [q for q in query_names if q not in given]
    retrieved: Dict[str, List[str]] = {}
    if rest:
        method = f"netvlad{args.num_loc}" if args.retrieval == "netvlad" else "exhaustive"
        given_part = loc_pairs.stem.replace("pairs-query-", "", 1)
        rest_pairs = loc_pairs.with_name(f"pairs-query-{method}-rest-of-{given_part}.txt")
        if rest_pairs.exists() and {q for q, _ in read_pairs(rest_pairs)} != set(rest):
            logger.info("%s was made for other queries; retrieving again.", rest_pairs)
            rest_pairs.unlink()
        _retrieve(args, image_dir, outputs, rest_pairs, rest, db_names)
        for q, d in read_pairs(rest_pairs):
            retrieved.setdefault(q, []).append(d)
    pairs = [(q, d) for q in query_names for d in (given.get(q) or retrieved.get(q, []))]
    if not loc_pairs.exists() or read_pairs(loc_pairs) != pairs:
        write_pairs(pairs, loc_pairs)
    logger.info(
        "Query pairs: %d queries from %s, %d retrieved (%s).",
        len(given),
        ", ".join(map(str, args.query_pairs)),
        len(rest),
        args.retrieval,
    )
    check_pairs(loc_pairs, "query pairs")
    return loc_pairs


def _retrieve(args, image_dir, outputs, output, query_names, db_names):
    if done(output, "retrieval"):
        return
    if args.retrieval == "netvlad":
        from pipelines import netvlad

        desc = netvlad.extract(
            image_dir, outputs, list(db_names) + list(query_names), args.netvlad_weights
        )
        retrieval_pairs(desc, output, args.num_loc, query_names, db_names)
    else:
        exhaustive_pairs(query_names, db_names, output)
