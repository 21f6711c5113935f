"""Command line: ``lesionseg <command>``. Each command module exposes ``register(subparsers)``."""
