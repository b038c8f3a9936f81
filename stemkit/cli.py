"""The ``stemkit`` command.

``stemkit demo``      simulate a polycrystal, save and reload it, and write an HTML page of its virtual images
``stemkit info PATH`` read a file and print its shape, calibrations and metadata
``stemkit formats``   list the file formats ``stemkit.load`` reads
``stemkit orient PATH -o OUT``  orientation and phase map of a file (pretrained or given weights); a .zarr
                               OUT is written block by block and an interrupted run resumes
``stemkit train ...``  train an orientation model on simulated patterns (checkpointed, resumable)
``stemkit cluster PATH -o OUT``  divisive clustering of the patterns (labels, tree, means, readings)
``stemkit strain PATH -o OUT``   strain and rotation maps (lattice fit, or ``--method ccstae``)
``stemkit report OUT... -o report.html``  one offline HTML page of result maps linked to the patterns

Exit status: 0 success, 2 bad input (the message says what and how to fix it).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from stemkit.io import load, save, save_by_chunks, supported_formats
from stemkit.io.resumable import progress_dir, unfinished_blocks


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stemkit`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # torch is imported only by the command that needs it
        command, run = "train", lambda: _run_train(argv[1:])
    else:
        args = _parser().parse_args(argv)
        command, run = args.command, lambda: args.run(args)
    try:
        return run()
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"stemkit {command}: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stemkit", description="4D-STEM analysis toolkit")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="orientation, clustering and strain on simulated specimens, scored "
                                            "against their truth, in one offline HTML report")
    demo.add_argument("--output", type=Path, default=Path("demo/stemkit_demo.html"), help="HTML page to write")
    demo.add_argument("--scan", type=int, default=32, help="scan size (square) of both specimens, default 32")
    demo.add_argument("--strain-epochs", type=int, default=6, help="most CC-ST-AE training passes, default 6")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_run_demo)

    info = commands.add_parser("info", help="describe a 4D-STEM file")
    info.add_argument("path", type=Path)
    info.add_argument("--beam-energy-kev", type=float, default=None)
    info.add_argument("--k-step", type=float, default=None, help="detector pixel size in 1/Å")
    info.set_defaults(run=_run_info)

    formats = commands.add_parser("formats", help="list readable file formats")
    formats.set_defaults(run=_run_formats)

    orient = commands.add_parser("orient", help="orientation and phase map of a 4D-STEM file")
    orient.add_argument("path", type=Path, help="a file stemkit.load reads")
    orient.add_argument("-o", "--output", type=Path, required=True,
                        help="result file: .zarr (written block by block; run again to resume an interrupted "
                             "run) or .nc")
    orient.add_argument("--weights", default="cu-cu2o",
                        help="a pretrained name (stemkit/pretrained/) or a weights folder (default cu-cu2o)")
    orient.add_argument("--beam-energy-kev", type=float, default=None)
    orient.add_argument("--k-step", type=float, default=None, help="detector pixel size in 1/Å")
    orient.add_argument("--device", default="cpu")
    orient.add_argument("--all-phases", action="store_true", help="let the refinement choose the phase too")
    orient.add_argument("--no-neighbours", action="store_true",
                        help="do not offer doubtful patterns their scan neighbours' orientations (for scattered, "
                             "unrelated patterns laid out as a scan)")
    orient.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    orient.add_argument("--no-progress", action="store_true")
    orient.set_defaults(run=_run_orient)

    # `stemkit train ...` is handed to stemkit.orientation.train before this parser is built (see main)
    commands.add_parser("train", help="train an orientation model on simulated patterns (resumable); "
                                      "`stemkit train --help` lists its options")

    cluster = commands.add_parser("cluster", help="divisive clustering of the patterns of a 4D-STEM file")
    _add_input_arguments(cluster)
    cluster.add_argument("--tree", default=None,
                         help="a manual tree instead of the automatic rule, one k per level, e.g. '2,3' "
                              "(k-means, as Shi et al.)")
    cluster.add_argument("--k-max", type=int, default=6, help="largest k tried at a node (default 6)")
    cluster.add_argument("--min-cluster-size", type=int, default=10, help="smallest cluster a split may leave")
    cluster.add_argument("--max-depth", type=int, default=6, help="deepest level of the tree")
    cluster.add_argument("--seed", type=int, default=0)
    cluster.set_defaults(run=_run_cluster)

    strain = commands.add_parser("strain", help="strain and rotation maps of a 4D-STEM file")
    _add_input_arguments(strain)
    strain.add_argument("--method", choices=("lattice-fit", "ccstae"), default="lattice-fit",
                        help="lattice-fit: basis vectors fitted to the Bragg peaks (default); ccstae: the "
                             "cycle-consistent spatial-transformer autoencoder, trained on the file's patterns")
    strain.add_argument("--epochs", type=int, default=10, help="ccstae: most training passes (default 10)")
    strain.add_argument("--max-train-patterns", type=int, default=2048,
                        help="ccstae: patterns trained on (default 2048)")
    strain.add_argument("--noise", choices=("poisson", "uniform"), default="poisson",
                        help="lattice-fit peak finding: poisson for data in counts (default), uniform otherwise")
    strain.add_argument("--device", default="cpu", help="torch device (ccstae and the peak finder)")
    strain.add_argument("--seed", type=int, default=0)
    strain.set_defaults(run=_run_strain)

    report = commands.add_parser("report", help="one offline HTML page of result maps linked to the patterns")
    report.add_argument("results", type=Path, nargs="+", help="result files (from orient, cluster, strain)")
    report.add_argument("-o", "--output", type=Path, required=True, help="HTML file to write")
    report.add_argument("--data", type=Path, default=None,
                        help="the 4D file the results came from (default: the input recorded in the results)")
    report.add_argument("--beam-energy-kev", type=float, default=None)
    report.add_argument("--k-step", type=float, default=None, help="detector pixel size in 1/Å")
    report.add_argument("--title", default="stemkit report")
    report.add_argument("--max-cube-mb", type=float, default=16.0, help="bound on the embedded cube (default 16)")
    report.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    report.set_defaults(run=_run_report)
    return parser


def _add_input_arguments(command: argparse.ArgumentParser) -> None:
    """The input file, its calibrations, the output and the switches every analysis command shares."""
    command.add_argument("path", type=Path, help="a file stemkit.load reads")
    command.add_argument("-o", "--output", type=Path, required=True, help="result file (.zarr or .nc)")
    command.add_argument("--beam-energy-kev", type=float, default=None)
    command.add_argument("--k-step", type=float, default=None, help="detector pixel size in 1/Å")
    command.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    command.add_argument("--no-progress", action="store_true")


def _load_input(args: argparse.Namespace, *, resumable: bool = False) -> xr.DataArray:
    """The 4D cube of ``args.path`` (lazy); refuses early when ``args.output`` would be overwritten
    (an unfinished block-by-block store is resumed where ``resumable``)."""
    resuming = resumable and progress_dir(args.output.expanduser()).is_dir()
    if args.output.exists() and not args.overwrite and not resuming:
        raise FileExistsError(f"{args.output} exists; give another -o or add --overwrite")
    data = load(args.path, lazy=True, beam_energy_kev=args.beam_energy_kev, k_step=args.k_step)
    if not isinstance(data, xr.DataArray) or data.ndim != 4:
        raise ValueError(f"{args.path} holds no 4D cube (scan_y, scan_x, ky, kx); give the file of the patterns")
    return data


def _save_result(result: xr.Dataset, args: argparse.Namespace, start: float, *, by_blocks: bool = False) -> None:
    """Record the input on the result, write it (a lazy result ``by_blocks``, see :func:`_write_by_blocks`),
    and say so."""
    result.attrs["input"] = str(Path(args.path).resolve())
    if by_blocks:
        _write_by_blocks(result, args)
    else:
        save(result, args.output, overwrite=args.overwrite)
    n = result.sizes["scan_y"] * result.sizes["scan_x"]
    print(f"wrote {args.output}: {n} patterns in {time.perf_counter() - start:.1f} s")


def parse_tree(text: str) -> list[int]:
    """A manual tree given as one k per level, e.g. ``"2,3"``.

    Parameters
    ----------
    text
        Comma-separated integers, each at least 1.

    Returns
    -------
    list of int
        The levels, as :class:`stemkit.DivisiveClustering` takes them.
    """
    try:
        levels = [int(part) for part in text.split(",")]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise ValueError(f"--tree takes one k (an integer >= 1) per level, separated by commas, e.g. '2,3'; "
                         f"got {text!r}")
    return levels


def _run_cluster(args: argparse.Namespace) -> int:
    from stemkit.clustering import DivisiveClustering

    tree = None if args.tree is None else parse_tree(args.tree)
    data = _load_input(args)
    start = time.perf_counter()
    clustering = DivisiveClustering(splitter="gmm" if tree is None else "kmeans", tree=tree, k_max=args.k_max,
                                    min_cluster_size=args.min_cluster_size, max_depth=args.max_depth,
                                    seed=args.seed, progress=not args.no_progress).fit(data)
    result = clustering.to_dataset()
    _save_result(result, args, start)
    print(f"{len(clustering.tree_.leaves)} leaf clusters in a tree of depth {clustering.tree_.depth}")
    return 0


def _run_strain(args: argparse.Namespace) -> int:
    from stemkit.strain import CCSTAE, LatticeFit

    data = _load_input(args)
    start = time.perf_counter()
    if args.method == "ccstae":
        estimator = CCSTAE(epochs=args.epochs, max_train_patterns=args.max_train_patterns, seed=args.seed,
                           device=args.device, progress=not args.no_progress)
    else:
        estimator = LatticeFit(noise=args.noise, device=args.device)
    result = estimator.fit(data).transform(data)
    _save_result(result, args, start)
    print("median " + ", ".join(f"{name} {float(result[name].median()):.4g}"
                                for name in ("exx", "eyy", "exy", "rotation")))
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from stemkit.viz import report

    if args.output.exists() and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; give another -o or add --overwrite")
    results = {path.name: load(path) for path in args.results}
    for name, result in results.items():
        if not isinstance(result, xr.Dataset):
            raise ValueError(f"{name} is not a result file (a Dataset of maps); give the outputs of stemkit "
                             f"orient, cluster or strain, and the patterns with --data")
    source = args.data or _recorded_input(results)
    data = load(source, lazy=True, beam_energy_kev=args.beam_energy_kev, k_step=args.k_step)
    path = report({"patterns": data, **results}, args.output, title=args.title, max_cube_mb=args.max_cube_mb,
                  overwrite=args.overwrite)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser (it needs no network)")
    return 0


def _recorded_input(results: dict[str, xr.Dataset]) -> Path:
    """The one input file the results record (``attrs["input"]``)."""
    recorded = {str(r.attrs["input"]) for r in results.values() if "input" in r.attrs}
    if len(recorded) != 1:
        found = f"they record {sorted(recorded)}" if recorded else "none records its input"
        raise ValueError(f"the report needs the 4D file the results came from and {found}; give it with --data FILE")
    return Path(recorded.pop())


def _run_orient(args: argparse.Namespace) -> int:
    from stemkit.orientation import OrientationMapper

    weights = Path(args.weights)
    mapper = OrientationMapper.load(weights) if weights.is_dir() else OrientationMapper.pretrained(args.weights)
    data = _load_input(args, resumable=True)
    start = time.perf_counter()
    by_blocks = args.output.suffix == ".zarr"  # lazy, written block by block, resumable
    result = mapper.predict(data, device=args.device, progress=not args.no_progress, all_phases=args.all_phases,
                            neighbours=not args.no_neighbours, lazy=by_blocks)
    _save_result(result, args, start, by_blocks=by_blocks)
    return 0


def _write_by_blocks(result: xr.Dataset, args: argparse.Namespace) -> None:
    """Compute a lazy result and write it block by block to the .zarr ``args.output``, resuming an
    interrupted run of the same command, with a progress bar over the blocks."""
    from tqdm.auto import tqdm

    left = unfinished_blocks(args.output)
    if left:
        print(f"resuming {args.output}: {len(left)} blocks of scan rows left to compute")
    with tqdm(total=len(result.chunks["scan_y"]), disable=args.no_progress, desc=args.command, unit="block") as bar:
        save_by_chunks(result, args.output, overwrite=args.overwrite, on_block=lambda done, total: bar.update(done - bar.n))


def _run_train(argv: list[str]) -> int:
    from stemkit.orientation.train import main as train

    return train(argv, prog="stemkit train")


def _run_info(args: argparse.Namespace) -> int:
    data = load(args.path, lazy=True, beam_energy_kev=args.beam_energy_kev, k_step=args.k_step)
    print(describe(data))
    return 0


def _run_formats(args: argparse.Namespace) -> int:
    for name, description in supported_formats().items():
        print(f"{name:12s} {description}")
    return 0


def describe(data: xr.DataArray | xr.Dataset) -> str:
    """A short human-readable summary of a loaded object."""
    if isinstance(data, xr.Dataset):
        return str(data)
    lines = [
        f"{data.name}: {dict(data.sizes)} {data.dtype} ({'dask, lazy' if data.chunks else 'in memory'})",
        f"  scan step   {data.stem.scan_step_nm} nm",
        f"  k step      {data.stem.k_step} 1/Å, direct beam at pixel {tuple(round(v, 2) for v in data.stem.k_origin)}",
        f"  beam energy {data.stem.beam_energy_kev} keV",
    ]
    lines += [f"  {key}: {value}" for key, value in data.attrs.items() if key != "beam_energy_kev"]
    return "\n".join(lines)


def _run_demo(args: argparse.Namespace) -> int:
    from stemkit.demo import run_demo

    start = time.perf_counter()
    path = run_demo(args.output, scan=args.scan, seed=args.seed, strain_epochs=args.strain_epochs)
    print(f"wrote {path} in {time.perf_counter() - start:.1f} s; open it in a browser (it needs no network)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
