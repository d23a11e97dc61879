"""The `vidtrt` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_doctor(args) -> int:
    from . import doctor

    text, code = doctor.report()
    print(text)
    return code


def _cmd_selfcheck(args) -> int:
    import torch

    from . import selfcheck

    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    print(f"vidtrt selfcheck: exporting every custom op to {args.out}/ and comparing backends", flush=True)
    rows = selfcheck.run(Path(args.out), dtypes=dtypes)
    print(selfcheck.format_table(rows))
    failed = [r for r in rows if not r.ok]
    print(f"{len(rows) - len(failed)} ok, {len(failed)} failed")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidtrt",
        description="TensorRT deployment toolkit for video object detectors (PSLA, Impression Network, MEGA, "
        "Temporal RoI Align, MFSA).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("doctor", help="list the components found or missing, and what each missing one disables")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser(
        "selfcheck",
        help="export every custom op to ONNX, run it in ONNX Runtime, compare with its reference and native kernel",
    )
    p.add_argument("--out", default="vidtrt-selfcheck", help="directory for the exported graphs (default: %(default)s)")
    p.add_argument("--dtypes", default="float32,float16", help="comma-separated dtypes (default: %(default)s)")
    p.set_defaults(func=_cmd_selfcheck)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
