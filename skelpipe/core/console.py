"""Terminal output: one rich console (stderr) and progress bars with rate and ETA."""

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second: the task's ``rate`` field when set (e.g. samples/s while the bar
    counts batches), else rich's own speed estimate of the task."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        rate = task.fields.get("rate", task.speed)
        return Text("" if rate is None else f"{rate:,.1f} {self.unit}/s", style="cyan")


def progress(unit: str = "it", transient: bool = False) -> Progress:
    """A rich progress bar showing done/total, rate in ``unit``/s, elapsed time and ETA.

    ``with progress("videos") as p: task = p.add_task("extract", total=n); p.advance(task)``.
    Pass ``rate=...`` to ``p.update`` to show a rate of another unit than the bar's steps.
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )
