"""``encryip-arbitrator``'s commands, one module each (``verify-onnx`` is
``verify_onnx.py``). A module provides ``NAME``, ``register(subparsers, parents)`` (which
sets ``run``: ``cli.options.add_command``) and ``run(args) -> exit code``; ``parents``
carry the options every command takes (``--vault``, ``--json``, ...). arbitrator/cli.py
builds the parser from them and hands it to the shared runner (cli/runner.py)."""

COMMANDS: tuple[str, ...] = (
    "verify_onnx",
    "verify_key",
    "verify_labels",
    "verify_endpoint",
    "export_triggers",
)
