"""``gpt2-dual convert`` and ``gpt2-dual check``: conversions that prove themselves.

``convert SRC DST`` reads SRC (format detected from its files, or a Hub repo id), writes DST in
the ``--to`` format through a temporary folder, cross-checks the result against the source in
gpt2_dual.pt and gpt2_dual.tf and renames it into place only when every number agrees
(``gpt2_dual.convert.conversion``). ``check SRC`` cross-checks one checkpoint in both
frameworks. Both print the report table; a mismatch exits with status 1, a user mistake
(missing path, unknown format, wrong head, destination exists) with status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gpt2_dual.cli.progress import Steps, quiet_tensorflow_import, source_needs_tensorflow


def add_parser(sub: Any) -> None:
    """Add ``convert`` and ``check`` to the ``gpt2-dual`` subparsers."""
    from gpt2_dual.convert.conversion import HEAD_CHOICES
    from gpt2_dual.convert.formats import DTYPES, FORMATS

    writable = [name for name, spec in FORMATS.items() if spec.writable]
    conv = sub.add_parser(
        "convert",
        help="convert a checkpoint between formats and frameworks, cross-checking the logits",
        description="Convert SRC to DST, then load both in gpt2_dual.pt and gpt2_dual.tf and "
        "compare every output; DST is written only when they agree.",
    )
    conv.add_argument("src", help="checkpoint folder or file (format detected), or Hub repo id")
    conv.add_argument("dst", help="folder to create")
    conv.add_argument("--to", choices=writable, default="hf", help="target format (default hf)")
    conv.add_argument("--dtype", choices=list(DTYPES), help="store weights in this dtype")
    conv.add_argument("--max-shard-size", default="5GB", help="largest safetensors file (hf)")
    conv.add_argument("--head", default="auto", metavar="|".join(HEAD_CHOICES),
                      help="model to write (default: the checkpoint's own)")  # fmt: skip
    conv.add_argument("--no-verify", action="store_true", help="skip the cross-check")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    conv.add_argument("--report", metavar="F", help="also write the report as JSON to F")
    conv.set_defaults(run=run_convert)

    chk = sub.add_parser(
        "check",
        help="cross-check a checkpoint in gpt2_dual.pt and gpt2_dual.tf",
        description="Load SRC in both frameworks, run its heads on fixed inputs and compare.",
    )
    chk.add_argument("src", help="checkpoint folder or file, or Hub repo id")
    chk.add_argument("--head", default="auto", help="model to run (default: the checkpoint's)")
    chk.add_argument("--report", metavar="F", help="also write the report as JSON to F")
    chk.set_defaults(run=run_check)


def run_convert(args: argparse.Namespace) -> int:
    """Convert, print the report; 1 when the cross-check refused the result."""
    from gpt2_dual.convert.conversion import ConversionError, convert

    if not args.no_verify or args.to == "keras" or source_needs_tensorflow(args.src):
        quiet_tensorflow_import(args.verbose)
    steps = Steps("convert", total=6 if not args.no_verify else 2)
    try:
        report = convert(
            args.src, args.dst, to=args.to, dtype=args.dtype, head=args.head,
            max_shard_size=args.max_shard_size, verify=not args.no_verify,
            overwrite=args.overwrite, report_path=args.report, progress=steps,
        )  # fmt: skip
    except ConversionError as err:
        steps.close()
        sys.stdout.write(err.report.table() + "\n")
        sys.stderr.write(f"gpt2-dual convert: error: {str(err).splitlines()[0]}\n")
        return 1
    steps.close()
    if report is not None:
        sys.stdout.write(report.table() + "\n")
    sys.stdout.write(f"wrote {args.dst} ({args.to})\n")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Cross-check one checkpoint; 1 on a mismatch."""
    from gpt2_dual.convert.conversion import check, open_source, with_head, write_report

    quiet_tensorflow_import(args.verbose)
    steps = Steps("check", total=3)
    steps("reading " + args.src)
    source = with_head(open_source(args.src), args.head)
    report = check(source, progress=steps)
    steps.close()
    if args.report:
        write_report(report, args.report)
    sys.stdout.write(report.table() + "\n")
    return 0 if report.ok else 1
