"""``python -m modelzoo.fetch URL... --to DIR``: the ``atelier fetch`` command on its own."""

import argparse
import sys

from atelier_io.quickexit import quick_exit

from .cli import register

parser = argparse.ArgumentParser(prog="atelier")
register(parser.add_subparsers())
args = parser.parse_args(["fetch", *sys.argv[1:]])
quick_exit(args.func(args))
