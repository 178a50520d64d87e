"""``encryip-export``'s commands, one module each (``protect`` is ``protect.py``). A
module provides ``NAME`` and ``register(subparsers, add_common)``, which adds its parser
(``add_common`` adds the options every command shares) and sets ``execute`` (the job it
runs on the loaded data) and, where it has its own checks, ``validate``; exporter/cli.py
builds the parser from them and hands it to the shared runner (cli/runner.py)."""

COMMANDS: tuple[str, ...] = ("train", "protect")
