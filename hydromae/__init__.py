"""The ``hydromae`` command: the top layer, one module per subcommand.

Each module has ``configure(parser)`` (its flags, from a typed config dataclass) and
``run(args) -> int``; the work itself lives in the library packages below it. Imports
flow one way, enforced by ``make lint`` (import-linter, ``pyproject.toml``)::

    hydromae  ->  training | preprocessing  ->  pipeline
"""
