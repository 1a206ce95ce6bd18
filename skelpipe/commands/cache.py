"""``skelpipe cache ls|gc``: show and prune the stage cache."""

import shutil
import time

import click
from rich.table import Table

from skelpipe.core.console import console
from skelpipe.core.fields import FiniteRange
from skelpipe.pipeline.cache import Cache


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@click.group("cache")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache root (default: $SKELPIPE_CACHE or ./cache).")
@click.pass_context
def cache_command(ctx, cache_dir):
    """Show and prune the stage cache.

    \b
    Example:
      skelpipe cache ls
      skelpipe cache gc --older-than 30 --dry-run
    """
    ctx.obj = Cache(cache_dir)


@cache_command.command("ls")
@click.option("--stage", default=None, help="Only this stage.")
@click.pass_obj
def cache_ls(cache: Cache, stage):
    """List cached stage outputs: stage, key, state, size, finish time. A finished stage whose
    files no longer match its manifest is "damaged" (the next run recomputes it), with the reason.

    \b
    Example:
      skelpipe cache ls --stage train
    """
    table = Table(title=f"cache: {cache.root}")
    for col in ("stage", "key", "state", "size", "finished", "units", "bad"):
        table.add_column(col)
    total, damaged = 0, []
    for name, key, state, size, manifest, why in cache.entries():
        if stage and name != stage:
            continue
        if state == "partial" and cache.is_locked(name, key):
            state = "running"
        total += size
        m = manifest or {}
        bad = m.get("bad_items", [])
        table.add_row(name, key, f"[red]{state}" if why else state, _human(size), str(m.get("finished", "")),
                      str(m.get("units", "")), str(len(bad)) if isinstance(bad, list) and manifest else "")
        if why:
            damaged.append(f"{name}/{key}: {why}")
    console.print(table)
    for line in damaged:
        console.print(f"[red]damaged[/] {line} (the next run recomputes it)", soft_wrap=True)
    console.print(f"total {_human(total)}")


@cache_command.command("gc")
@click.option("--stage", default=None, help="Only this stage.")
@click.option("--older-than", type=FiniteRange(min=0), default=None,
              help="Also remove finished entries finished more than this many days ago.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.pass_obj
def cache_gc(cache: Cache, stage, older_than, dry_run):
    """Remove abandoned partial work and damaged stages (not locked by a running process)
    and, with --older-than, old finished entries.

    \b
    Example:
      skelpipe cache gc --dry-run
    """
    cutoff = None if older_than is None else time.time() - older_than * 86400
    freed = 0
    for name, key, state, size, manifest, _ in list(cache.entries()):
        if stage and name != stage:
            continue
        path = cache.root / name / (key + (".partial" if state == "partial" else ""))
        if state in ("partial", "damaged"):
            if cache.is_locked(name, key):
                console.print(f"skipping {path}: being written by a running process")
                continue
        elif cutoff is None or path.stat().st_mtime > cutoff:
            continue
        with cache.unused(name, key) as free:
            if not free:
                console.print(f"skipping {path}: in use by a running plan")
                continue
            console.print(f"{'would remove' if dry_run else 'removing'} {path} ({_human(size)})")
            freed += size
            if not dry_run:
                shutil.rmtree(path)
    console.print(f"{'would free' if dry_run else 'freed'} {_human(freed)}")
