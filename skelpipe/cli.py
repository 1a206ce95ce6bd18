"""The ``skelpipe`` command: one click group; each command is a thin module of ``skelpipe.commands``.

Commands are imported only when used (click's documented lazy-group pattern), so that
``skelpipe doctor`` works when torch is broken and ``--help`` stays fast. A command module
exposes a ``click.Command`` under the attribute named below.
"""

import importlib
import sys
from pathlib import Path

import click

from skelpipe.core.disk import disk_full_error, is_disk_full
from skelpipe.core.errors import SkelpipeError

COMMANDS = {
    "install-openpifpaf": "skelpipe.commands.install:install_openpifpaf_command",
    "install-mediapipe": "skelpipe.commands.install_mediapipe:install_mediapipe_command",
    "doctor": "skelpipe.commands.install:doctor_command",
    "cache": "skelpipe.commands.cache:cache_command",
    "extract": "skelpipe.commands.extract:extract_command",
    "align": "skelpipe.commands.align:align_command",
    "pack": "skelpipe.commands.pack:pack_command",
    "train": "skelpipe.commands.train:train_command",
    "partmatrix": "skelpipe.commands.partmatrix:partmatrix_command",
    "evaluate": "skelpipe.commands.evaluate:evaluate_command",
    "report": "skelpipe.commands.report:report_command",
    "run-all": "skelpipe.commands.run_all:run_all_command",
    "predict": "skelpipe.commands.predict:predict_command",
    "bench": "skelpipe.commands.bench:bench_command",
    "export": "skelpipe.commands.export:export_command",
    "import": "skelpipe.commands.importing:import_command",
}


class LazyGroup(click.Group):
    """A group whose commands (``name → "module:attr"``) are imported when first used."""

    lazy = COMMANDS

    def list_commands(self, ctx):
        return sorted(self.lazy)

    def get_command(self, ctx, name):
        if name not in self.lazy:
            return None
        module, attr = self.lazy[name].split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            reason = str(e)

            @click.command(name, help=f"(unavailable: {reason})")
            def unavailable():
                raise SkelpipeError(f"command {name!r} is not available: {reason}")

            return unavailable


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="skelpipe")
@click.pass_context
def cli(ctx, debug):
    """skelpipe: RGB videos -> 2D skeletons -> action labels, with part-level knowledge
    distillation from high-quality skeletons.

    \b
    Example:
      skelpipe run-all demo            # the whole pipeline on a small synthetic dataset
      skelpipe extract --videos a.mp4 --backbone shufflenetv2k16 --out poses.h5
      skelpipe train --stage teacher --pack cache/pack/ab12 --out runs/teacher
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main(argv=None):
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="skelpipe", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:  # usage errors: exit 2
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except SkelpipeError as e:
        if debug:  # the whole story: also what a `raise SkelpipeError(...) from None` hid
            e.__suppress_context__ = False
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except OSError as e:  # a path that cannot be written or read (read-only, not a directory ...)
        if debug or not e.filename:
            raise
        what = "a file, not a directory" if isinstance(e, FileExistsError) else e.strerror
        click.echo(f"error: {e.filename}: {what or e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except (OSError, RuntimeError) as e:  # a full disk that no writer turned into its own line
        if debug or not is_disk_full(e):
            raise
        click.echo(f"error: {disk_full_error(getattr(e, 'filename', None) or Path.cwd())}", err=True)
        sys.exit(1)
