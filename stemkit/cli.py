"""The ``stemkit`` command.

``stemkit demo``      simulate a polycrystal, save and reload it, and write an HTML page of its virtual images
``stemkit info PATH`` read a file and print its shape, calibrations and metadata
``stemkit formats``   list the file formats ``stemkit.load`` reads
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from stemkit.io import load, save, supported_formats


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stemkit`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"stemkit {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stemkit", description="4D-STEM analysis toolkit")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="simulate a Cu/Cu2O polycrystal and write an HTML page of it")
    demo.add_argument("--output", type=Path, default=Path("demo/stemkit_demo.html"), help="HTML page to write")
    demo.add_argument("--scan", type=int, default=48, help="scan size (square), default 48")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_run_demo)

    info = commands.add_parser("info", help="describe a 4D-STEM file")
    info.add_argument("path", type=Path)
    info.add_argument("--beam-energy-kev", type=float, default=None)
    info.add_argument("--k-step", type=float, default=None, help="detector pixel size in 1/Å")
    info.set_defaults(run=_run_info)

    formats = commands.add_parser("formats", help="list readable file formats")
    formats.set_defaults(run=_run_formats)
    return parser


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
    from stemkit.demo_job import run_demo

    start = time.perf_counter()
    path = run_demo(args.output, scan=args.scan, seed=args.seed)
    print(f"wrote {path} in {time.perf_counter() - start:.1f} s; open it in a browser (it needs no network)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
