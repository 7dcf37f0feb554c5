"""``pointea download``: fetch and unpack a public benchmark archive."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Dict

from pointea.data.catalog import DATASETS

EPILOG = """\
examples:
  # ModelNet40 in the HDF5 layout (falls back to the other known archives)
  pointea download modelnet40 --data-root data
  # ShapeNetPart from a mirror, checked against a sha256 you trust
  pointea download shapenetpart --data-root data \\
      --url https://mirror.example.org/shapenetcore_partanno_segmentation_benchmark_v0_normal.zip \\
      --sha256 <64 hex digits>
  # an archive already on disk
  pointea download modelnet10 --data-root data --url file:///downloads/ModelNet10.zip
  # try a mirror (base URL or folder holding the archives) before the original hosts
  POINTEA_DATA_MIRROR=https://mirror.example.org/pointea pointea download modelnet40 --data-root data
  # ScanObjectNN is sent on request only: this prints how to request it and where to unpack it
  pointea download scanobjectnn --data-root data

An interrupted download resumes from DIR/<archive>.part when run again. An archive placed by hand
at DIR/<archive> is checked and unpacked without downloading. Archives with a published sha256
(see --list) are verified against it; the others are reported as "not verified: no published
checksum". Unpacking stops past 20 GiB in total (POINTEA_MAX_UNPACKED_GB or --max-unpacked-gb)
or at 200x expansion (--max-ratio); the largest known archive, ModelNet40.zip, unpacks to ~9 GiB.
"""


def downloadable() -> Dict[str, str]:
    """Catalog dataset name -> its download source name, for the datasets that have one."""
    return {name: spec.download_name for name, spec in DATASETS.items() if spec.download_name}


def add_parser(subparsers) -> argparse.ArgumentParser:
    names = downloadable()
    parser = subparsers.add_parser(
        "download",
        help=f"download and unpack a benchmark ({', '.join(names)}; on-request ones: how to get them)",
        description=(
            "Download a benchmark archive (resumable), check its sha256 where one is published, and "
            "unpack it safely under --data-root. Already unpacked datasets are left alone."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("dataset", choices=list(names), help="dataset to fetch")
    parser.add_argument("--data-root", default="data", metavar="DIR",
                        help="folder receiving the dataset (default: %(default)s)")
    # The option's former name, still accepted; a separate argument so that help hides it.
    parser.add_argument("--root", dest="data_root", help=argparse.SUPPRESS)
    parser.add_argument("--url", metavar="URL",
                        help="archive URL to use instead of the known hosts (http(s):// or file://)")
    parser.add_argument("--sha256", metavar="HEX", help="expected sha256 of the archive")
    parser.add_argument("--keep-archive", action="store_true", help="keep the archive after unpacking")
    parser.add_argument("--max-unpacked-gb", type=float, metavar="GB",
                        help="refuse archives unpacking to more than this many GiB "
                             "(default: $POINTEA_MAX_UNPACKED_GB or 20)")
    parser.add_argument("--max-ratio", type=float, metavar="N",
                        help="refuse archives inflating more than N times (default: 200)")
    parser.add_argument("--list", action="store_true", help="print the known archives of the dataset and exit")
    return parser


def run(args: argparse.Namespace) -> int:
    from pointea.data.download import (
        ON_REQUEST, DownloadError, candidate_sources, download_dataset, request_instructions,
    )

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    source_name = downloadable()[args.dataset]
    if args.list and source_name in ON_REQUEST:  # no archive to list, only the steps
        print(request_instructions(source_name, args.data_root))
        return 0
    if args.list:
        for source in candidate_sources(source_name, args.url, args.sha256):
            checksum = source.sha256 or "none published (downloads are not verified)"
            print(f"{source.filename}  ({source.layout or 'archive'})\n  url     {source.url}\n"
                  f"  sha256  {checksum}\n  unpacks {source.folder}/")
        return 0
    try:
        folder = download_dataset(source_name, args.data_root, url=args.url, sha256=args.sha256,
                                  keep_archive=args.keep_archive, progress=True,
                                  max_unpacked_gb=args.max_unpacked_gb, max_ratio=args.max_ratio)
    except (DownloadError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(folder)
    return 0
