"""``pointea download``: fetch and unpack a public benchmark archive."""

from __future__ import annotations

import argparse
import logging
import sys

DATASETS = ("modelnet40", "modelnet10", "shapenetpart")

EPILOG = """\
examples:
  # ModelNet40 in the HDF5 layout (falls back to the other known archives)
  pointea download modelnet40 --root data
  # ShapeNetPart from a mirror, checked against a known sha256
  pointea download shapenetpart --root data \\
      --url https://mirror.example.org/shapenetcore_partanno_segmentation_benchmark_v0_normal.zip \\
      --sha256 <64 hex digits>
  # an archive already on disk
  pointea download modelnet10 --root data --url file:///downloads/ModelNet10.zip
  # try a mirror (base URL or folder holding the archives) before the original hosts
  POINTEA_DATA_MIRROR=https://mirror.example.org/pointea pointea download modelnet40 --root data

An interrupted download resumes from <root>/<archive>.part when run again. An archive placed
by hand at <root>/<archive> is verified and unpacked without downloading.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "download",
        help="download and unpack ModelNet40, ModelNet10 or ShapeNetPart",
        description=(
            "Download a benchmark archive (resumable), verify its sha256, and unpack it safely "
            "under --root. Already unpacked datasets are left alone."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("dataset", choices=DATASETS, help="dataset to fetch")
    parser.add_argument("--root", default="data", help="folder receiving the dataset (default: %(default)s)")
    parser.add_argument("--url", help="archive URL to use instead of the known hosts (http(s):// or file://)")
    parser.add_argument("--sha256", help="expected sha256 of the archive")
    parser.add_argument("--keep-archive", action="store_true", help="keep the archive after unpacking")
    parser.add_argument("--list", action="store_true", help="print the known archives of the dataset and exit")
    return parser


def run(args: argparse.Namespace) -> int:
    from pointea.data.download import DownloadError, candidate_sources, download_dataset

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list:
        for source in candidate_sources(args.dataset, args.url, args.sha256):
            print(f"{source.filename}  ({source.layout or 'archive'})\n  url     {source.url}\n"
                  f"  sha256  {source.sha256 or 'unknown'}\n  unpacks {source.folder}/")
        return 0
    try:
        folder = download_dataset(args.dataset, args.root, url=args.url, sha256=args.sha256,
                                  keep_archive=args.keep_archive, progress=True)
    except (DownloadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(folder)
    return 0
