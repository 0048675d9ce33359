"""Entry point of the ``quantkit`` command.

Errors: a :class:`~quantkit.errors.QuantkitError` becomes one paragraph on stderr and exit code
2 (input) or 1 (run-time); anything else is a bug and says so. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Sequence

import click

from quantkit import __version__
from quantkit._log import set_progress
from quantkit.errors import QuantkitError

_state = {"debug": False}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="quantkit")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details (INFO level).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, warnings and errors only.")
def cli(debug: bool, verbose: bool, quiet: bool) -> None:
    """quantkit: INT8 calibration, mixed FP16/INT8 Q/DQ models and reports for TensorRT.

    \b
    Examples:
      quantkit calibrate model.onnx --data calib.npz --cache model.cache --scales model.json
      quantkit cache show model.cache
      quantkit cache convert model.cache -o model.json
      quantkit demo -o demo-out
    """
    _state["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    set_progress(not quiet)


def _register() -> None:
    from quantkit.cli import build, cache, calibrate, demo, inspect, quantize, report, sweep
    from quantkit.cli import eval as eval_

    cli.add_command(build.build_cmd)
    cli.add_command(calibrate.calibrate_cmd)
    cli.add_command(cache.cache_group)
    cli.add_command(demo.demo_cmd)
    cli.add_command(inspect.inspect_cmd)
    cli.add_command(quantize.quantize_cmd)
    cli.add_command(eval_.eval_cmd)
    cli.add_command(report.report_cmd)
    cli.add_command(sweep.sweep_cmd)
    cli.add_command(sweep.sensitivity_cmd)
    cli.add_command(sweep.autotune_cmd)
    from quantkit.cli.transform import transform_cmd  # issue 10: model transforms
    cli.add_command(transform_cmd)
    from quantkit.cli.estimate import estimate_cmd  # issue 15: estimated TensorRT latency
    cli.add_command(estimate_cmd)


_register()


def _error(message: str) -> None:
    text = " ".join(message.split())
    click.echo(textwrap.fill(f"error: {text}", width=100, break_on_hyphens=False,
                             break_long_words=False), err=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code (used by the console script)."""
    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="quantkit",
                        standalone_mode=False)
    except click.exceptions.Exit as ex:
        return ex.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        # click turns Ctrl-C into Abort; every output is written atomically, so what exists
        # is complete
        click.echo("interrupted", err=True)
        return 130
    except click.ClickException as ex:
        ex.show()
        return ex.exit_code
    except QuantkitError as err:
        if _state["debug"]:
            raise
        _error(str(err))
        return err.exit_code
    except Exception as err:  # a bug: say so, keep the traceback behind --debug
        if _state["debug"]:
            raise
        _error(f"internal error ({type(err).__name__}: {err}). This is a bug in quantkit; "
               "re-run with --debug for the traceback and report it.")
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
