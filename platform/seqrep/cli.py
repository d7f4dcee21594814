"""`seqrep` command line: argument parsing only; the work is done by the modules it calls."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import threading
from pathlib import Path
from typing import NoReturn

from seqrep import __version__, paths
from seqrep.cohorts import DEFAULT_SIZE as DEFAULT_COHORT_SIZE
from seqrep.errors import SeqrepError


def _flag(flag: str):
    """An argparse type for a numeric flag, checked by the rule `StudyOptions.validate` applies."""

    def parse(text: str):
        from seqrep.studies import LIMITS, flag_violation

        kind, _, what = LIMITS[flag]
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if flag_violation(flag, value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


def _budget_flags() -> argparse.ArgumentParser:
    """The budget and placement flags shared by `search` and `reproduce`."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("budget and placement")
    g.add_argument("--trials", type=_flag("--trials"),
                   help="number of trials (default: the space's; 1 for a space that searches nothing)")
    g.add_argument("--max-epochs", type=_flag("--max-epochs"), help="epochs per trial (default: the space's)")
    g.add_argument("--seed", type=int, default=0, help="seed of the search and the trials (default 0)")
    g.add_argument("--name", help="study name (default: SPACE-DATASET; for reproduce, a prefix)")
    g.add_argument("--storage", default=str(paths.DEFAULT_STORAGE), help="folder of study folders (default %(default)s)")
    g.add_argument("--tracking-uri", help=f"MLflow tracking URI (default $MLFLOW_TRACKING_URI, else {paths.DEFAULT_TRACKING_URI})")
    g.add_argument("--data-dir", help="data directory (default $SEQREP_DATA, else a user cache dir)")
    g.add_argument("--cpus-per-trial", type=_flag("--cpus-per-trial"), default=1.0, help="CPUs per trial (default 1)")
    g.add_argument("--gpus-per-trial", type=_flag("--gpus-per-trial"), default=0.0, help="GPUs per trial; 0.25 packs four per GPU (default 0)")
    g.add_argument("--max-concurrent", type=_flag("--max-concurrent"), default=0, help="trials at once (default 0: as many as fit)")
    g.add_argument("--searcher", choices=("random", "optuna"), default="random", help="random search or Optuna TPE")
    g.add_argument("--scheduler", choices=("fifo", "asha"), default="fifo", help="run every trial to the end, or ASHA early stopping")
    g.add_argument("--address", help="join a running Ray cluster (e.g. auto); default: start a local one")
    g.add_argument("--resume", action="store_true", help="continue a study whose driver stopped")
    g.add_argument("--break-lock", action="store_true",
                   help="take over a study whose lock a driver on another host left (only once that driver has ended)")
    g.add_argument("--verbose", action="store_true", help="Ray Tune's full trial table instead of seqrep's progress line")
    g.add_argument("--max-failures", type=_flag("--max-failures"), default=2, help="restarts of a failed trial from its last checkpoint (default 2)")
    g.add_argument("--cohort-size", type=_flag("--cohort-size"), default=DEFAULT_COHORT_SIZE,
                   help="train up to this many same-shape configs of a random search as one vectorised model, one "
                        "Ray trial (methods with cohorts, FIFO only; 1: one config per trial; default %(default)s)")
    return p


def _options(args):
    from seqrep.studies import StudyOptions

    return StudyOptions(
        trials=args.trials, max_epochs=args.max_epochs, seed=args.seed, name=args.name, storage=args.storage,
        tracking_uri=args.tracking_uri, data_dir=args.data_dir, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent, searcher=args.searcher,
        scheduler=args.scheduler, address=args.address, resume=args.resume, max_failures=args.max_failures,
        break_lock=args.break_lock,
        verbose=args.verbose, cohort_size=args.cohort_size,
    )


def cmd_spaces(args) -> int:
    from seqrep import spaces

    if args.name:
        space = spaces.load(args.name, check_config=args.check)
        print(spaces.resolved_json(space) if args.json else spaces.format_space(space))
        return 0
    good, bad = spaces.list_spaces(check_config=args.check)
    if args.json:
        print(json.dumps([s.to_json() for s in good], indent=2))
    else:
        width = max([len(s.name) for s in good] + [4])
        mwidth = max([len(s.method) for s in good] + [6])
        print(f"{'name':<{width}}  {'method':<{mwidth}}  searched  source")
        for s in good:
            print(f"{s.name:<{width}}  {s.method:<{mwidth}}  {len(s.space):>8}  {s.source}")
    for err in bad:
        print(f"seqrep: error: {err}", file=sys.stderr)
    return 1 if bad else 0


def cmd_search(args) -> int:
    from seqrep import launch, studies, summary

    p = studies.plan(args.space, args.dataset, _options(args))
    out = launch.run_study(p)
    frame = summary.read(out.parent)
    counts = frame["status"].value_counts().to_dict()
    print(f"seqrep: study {p.name}: {len(frame)} trials ({', '.join(f'{v} {k}' for k, v in counts.items())}); "
          f"summary {out}; MLflow experiment {p.name!r} at {p.tracking_uri}")
    return 0


def cmd_summarize(args) -> int:
    from seqrep import summary

    out = summary.write(Path(args.study_dir))
    print(f"seqrep: wrote {out} ({len(summary.read(out.parent))} trials)")
    return 0


def cmd_sync(args) -> int:
    from seqrep import sync

    uri, writes = sync.sync(Path(args.study_dir), args.tracking_uri)
    if not writes.total():
        print(f"seqrep: {uri} already holds the study in {args.study_dir}; nothing written")
    else:
        print(f"seqrep: synced {args.study_dir} into {uri}: {writes.runs_created} runs created, {writes.runs_ended} "
              f"ended, {writes.metric_values} metric values, {writes.params} params, "
              f"{writes.artifact_folders} artifact folders")
    return 0


def cmd_reproduce(args) -> int:
    from seqrep.reproduce import reproduce

    md, csv = reproduce(args.table, args.dataset, _options(args), Path(args.out), splits=args.splits,
                        repeats=args.repeats, at_once=args.studies_at_once)
    print(md.read_text())
    print(f"seqrep: wrote {md}, {csv} and the report {md.with_name(f'{args.table}-report.html')}")
    return 0


def cmd_report(args) -> int:
    from seqrep import report, studydir

    target = Path(args.target)
    if studydir.read_record(target) is not None:
        pages = report.study_report(target)
    elif target.is_dir() or len(target.parts) > 1:  # a path, not a table's name
        raise SeqrepError(f"{target} is not a seqrep study (no study.json); give a study folder that `seqrep "
                          "search` wrote, or a table that `seqrep reproduce` rebuilt (e.g. table7)")
    else:
        pages = report.table_report(args.target, Path(args.out))
    print(f"seqrep: wrote {' and '.join(str(p) for p in pages)}")
    return 0


def cmd_data(args) -> int:
    from seqrep import data

    root = data.resolve_data_dir(args.data_dir)
    names = args.names or data.names()
    entries = [data.info(name) for name in names]  # an unknown name fails before anything is fetched
    paths.check_folder("--data-dir", root, writable=args.action == "download")
    if args.action == "download":
        failed = False
        for entry in entries:
            if not entry.files:
                print(f"{entry.name:<22} skipped: generated, nothing to download")
                continue
            try:
                results = data.download(entry.name, root)
            except SeqrepError as err:
                print(f"seqrep: error: {err}", file=sys.stderr)
                failed = True
                continue
            checked = {root / rel for rel, _ in entry.sha256}
            for path, fetched in results:
                check = "sha256 verified" if path in checked else "no checksum known"
                print(f"{entry.name:<22} {'fetched' if fetched else 'present, not fetched again'} ({check}): {path}")
        print(f"data directory: {root}")
        return 2 if failed else 0
    missing_any = False
    for name, entry in zip(names, entries):
        missing = data.missing_files(name, root)
        state = "generated" if not entry.files else ("missing" if missing else "present")
        missing_any |= bool(missing)
        if args.action == "verify" and not missing and entry.files:
            state = data.verify(name, root)
        needs = f"; needs {', '.join(p.relative_to(root).as_posix() for p in missing)}" if missing else ""
        print(f"{name:<22} {state:<12} {entry.description}{needs}")
    print(f"data directory: {root}" + ("" if root.is_dir() else " (no such folder: `seqrep data download` makes it, "
                                       "or point --data-dir or $SEQREP_DATA at your data)"))
    return 1 if (args.action == "verify" and missing_any) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqrep", description=__doc__)
    parser.add_argument("--version", action="version", version=f"seqrep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("spaces", help="list the search spaces, or show one")
    p.add_argument("name", nargs="?", help="a space name or a path to a YAML file")
    p.add_argument("--json", action="store_true", help="print the resolved space as JSON")
    p.add_argument("--check", action="store_true",
                   help="also check every key and value against the method's Config (imports the method)")
    p.set_defaults(func=cmd_spaces)

    p = sub.add_parser("search", parents=[_budget_flags()], help="run a random search (a study) on a Ray cluster")
    p.add_argument("space", help="a space name or a path to a YAML file")
    p.add_argument("--dataset", required=True, help="data set name (see `seqrep data list`)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("summarize", help="(re)write a study's trials.parquet")
    p.add_argument("study_dir", help="the study folder, e.g. results/studies/table7-nn-toy-toy")
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("sync", help="make an MLflow store hold a study's runs, replayed from its folder")
    p.add_argument("study_dir", help="the study folder, e.g. results/studies/table7-nn-toy-toy")
    p.add_argument("--tracking-uri", help="the store to fill (default: the study's own)")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("reproduce", parents=[_budget_flags()], help="rebuild a thesis table beside the published numbers")
    p.add_argument("table", help="table3, table6, table7, table9 ... table14")
    p.add_argument("--dataset", action="append", help="restrict to this data set (repeatable)")
    p.add_argument("--out", default=str(paths.DEFAULT_TABLES), help="output folder (default %(default)s)")
    p.add_argument("--splits", type=int, default=None,
                   help="table8: run the first K train/test splits of each UCI set (default 10, or all if fewer)")
    p.add_argument("--repeats", type=_flag("--repeats"), default=1,
                   help="run each study with seeds SEED .. SEED+R-1 and show mean ± std (default 1)")
    p.add_argument("--studies-at-once", type=_flag("--studies-at-once"), default=0,
                   help="run up to N of the table's studies at the same time, their trials sharing the "
                        "cluster's slots (default 0: all, each started once those before it train; "
                        "1: one after another)")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("report", help="an HTML and a Markdown page for a study folder or a rebuilt table")
    p.add_argument("target", help="a study folder, or a table that `seqrep reproduce` rebuilt (e.g. table7)")
    p.add_argument("--out", default=str(paths.DEFAULT_TABLES), help="where the table was written (default %(default)s)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("data", help="list, verify or download the data sets in the data directory")
    p.add_argument("action", choices=("list", "verify", "download"),
                   help="download fetches missing or damaged files; generated sets are skipped")
    p.add_argument("names", nargs="*", help="data sets (default: all)")
    p.add_argument("--data-dir", help="data directory (default $SEQREP_DATA, else a user cache dir)")
    p.set_defaults(func=cmd_data)
    return parser


def _quiet_stdout() -> int:
    """The reader of stdout went away (`seqrep spaces --json | head`): end quietly, as `cat` does."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    except (AttributeError, OSError, ValueError):  # a stdout without a file descriptor (tests)
        pass
    return 128 + 13  # SIGPIPE's exit status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _quiet_stdout()
    except SeqrepError as err:
        print(f"seqrep: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from seqrep.interrupts import stop_signal

        print(f"seqrep: {'interrupted' if stop_signal() == 2 else 'stopped by SIGTERM'}; the summary holds what "
              "ran so far; continue with the same command and --resume", file=sys.stderr)
        return 128 + stop_signal()


def run() -> NoReturn:
    """The `seqrep` command (and `python -m seqrep.cli`): `main`, then `exit_now` with its code."""
    exit_now(main())


def exit_now(code: int) -> NoReturn:
    """End the process as Python's own exit would, minus its last step.

    Python ends by stopping its threads (the threads' exit hooks, which end idle executor workers,
    then a join of every thread that is not a daemon), running the atexit handlers (Ray's shutdown,
    logging's flush, `weakref.finalize` clean-ups) and flushing stdout and stderr; all of that
    happens here, through the same functions. What is skipped is the interpreter's teardown of
    every module and object left, which once torch, Ray, MLflow and matplotlib are loaded takes
    0.9 s (their imports alone) to 1.6 s (at the end of `seqrep reproduce table10`) after every
    result is written. Nothing of seqrep's is left to that teardown: files are closed where they
    are written, the MLflow queue is drained when a study closes. Where the interpreter lacks
    `threading._shutdown` or `atexit._run_exitfuncs` (CPython has both, not as public names), this
    is Python's own exit."""
    stop_threads = getattr(threading, "_shutdown", None)
    run_handlers = getattr(atexit, "_run_exitfuncs", None)
    if stop_threads is None or run_handlers is None:
        sys.exit(code)
    stop_threads()
    run_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away, a stream already closed
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
