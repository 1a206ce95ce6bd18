"""A resumable batch job's working directory: finished units, skipped bad items, notes."""

import hashlib
import json
from pathlib import Path

from skelpipe.core.atomic import write_json
from skelpipe.core.console import console


class Work:
    """The directory a long job writes into (a cache stage's partial directory, or any folder),
    with per-unit resume (``is_done`` / ``mark_done``) and bad-item records: a bad item is
    reported and skipped, finished units are never redone."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.notes: dict = {}
        (self.dir / ".units").mkdir(parents=True, exist_ok=True)
        (self.dir / ".bad").mkdir(exist_ok=True)

    @staticmethod
    def _name(unit: str) -> str:
        return hashlib.sha1(unit.encode()).hexdigest()[:20] + ".json"

    def is_done(self, unit: str) -> bool:
        return (self.dir / ".units" / self._name(unit)).exists()

    def mark_done(self, unit: str, info: dict | None = None) -> None:
        write_json(self.dir / ".units" / self._name(unit), {"unit": unit, "info": info or {}})

    def done_units(self) -> dict[str, dict]:
        records = (json.loads(p.read_text()) for p in (self.dir / ".units").glob("*.json"))
        return {r["unit"]: r["info"] for r in records}

    def report_bad(self, item: str, reason: str) -> None:
        console.print(f"[yellow]skipped[/] {item}: {reason}")
        write_json(self.dir / ".bad" / self._name(item), {"item": item, "reason": reason})

    def bad_items(self) -> list[dict]:
        return sorted((json.loads(p.read_text()) for p in (self.dir / ".bad").glob("*.json")),
                      key=lambda r: r["item"])

    def note(self, **fields) -> None:
        self.notes.update(fields)
