"""``restorelab <command>``: the Lightning entry points (``fit``, ``validate``, ``test``, ``predict --config``;
``restorelab.lightning_cli``) and the tools around them, each a module with ``main(argv)``. Every command's
errors are reported by ``restorelab.error_report``: one line for anticipated ones."""
from __future__ import annotations

import sys

from restorelab.error_report import run_reporting_errors
from restorelab.runs import finish_wandb

# Subcommands that are tools around training rather than Lightning entry points: module → its main(argv).
TOOLS = {
    "benchmark": "restorelab.benchmark",
    "compare": "restorelab.compare",
    "predict": "restorelab.predict",  # on files; `predict --config ...` is LightningCLI's predict
    "sweep": "restorelab.sweep",
    "slurm": "restorelab.slurm",
    "report": "restorelab.report",
    "bench": "restorelab.bench",
    "models": "restorelab.model_table",
    "zero-shot": "restorelab.zero_shot_table",
    "tune": "restorelab.tune",
    "import": "restorelab.import_weights",
}


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    sys.exit(run_reporting_errors(lambda: _dispatch(argv, args), argv, on_error=finish_wandb))


def _dispatch(argv: list[str], args: list[str] | None) -> int:
    if argv and argv[0] in TOOLS and not (argv[0] == "predict" and {"--config", "-c"} & set(argv)):
        import importlib

        return importlib.import_module(TOOLS[argv[0]]).main(argv[1:]) or 0
    from restorelab.lightning_cli import run_lightning_cli

    return run_lightning_cli(args)


if __name__ == "__main__":
    main()
