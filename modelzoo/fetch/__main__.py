"""``python -m modelzoo.fetch URL... --to DIR``: the ``atelier fetch`` command on its own."""

import argparse
import sys

from .cli import register

parser = argparse.ArgumentParser(prog="atelier")
register(parser.add_subparsers())
args = parser.parse_args(["fetch", *sys.argv[1:]])
sys.exit(args.func(args))
