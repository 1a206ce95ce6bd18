"""``skelpipe extract`` outside a pipeline: videos → one pose store, resumable in
``<out>.partial/`` (a private stage cache keyed as a pipeline's extract stage), sharded over
processes under torchrun; the last shard to finish writes the store and its manifest."""

import json
import os
import shutil
from pathlib import Path

from rich.table import Table

from skelpipe.core import atomic
from skelpipe.core.console import console
from skelpipe.core.errors import SkelpipeError
from skelpipe.pipeline.cache import Cache, Lock
from skelpipe.pipeline.stages import entry
from skelpipe.pose import blazepose
from skelpipe.pose.extract import (
    NothingExtracted,
    RunStats,
    extract_to_work,
    load_estimator,
    merge_and_drop,
    sample_id_for,
    shard_from_env,
)
from skelpipe.pose.network import resolve_backbone
from skelpipe.pose.settings import ExtractConfig, checkpoint_key
from skelpipe.pose.video import Video


def extract_file(video_paths, out, config: ExtractConfig, shard: tuple[int, int] | None = None) -> dict:
    """Videos → ``out`` (one store) with ``config`` (its ``backbone`` given), resumable in
    ``<out>.partial/``; ``shard=(i, n)`` (else from RANK / WORLD_SIZE): this process's share.

    Returns the run's manifest (``bad_items`` included). Under sharding, a shard that is not the
    last to finish returns ``{"waiting_for_shards": True, ...}`` and leaves the merge to the last.
    """

    out = Path(out)
    videos = [Video(sample_id_for(p), Path(p)) for p in video_paths]
    if not videos:
        raise SkelpipeError("no videos given (--videos)")
    root = out.with_name(out.name + ".partial")
    key_config = {"videos": [[v.id, str(v.path.resolve())] for v in videos],
                  "backbone": resolve_backbone(config.backbone),
                  "checkpoint": checkpoint_key(config.backbone, config.checkpoint, root / ".hashes"),
                  "long_edge": config.long_edge, "max_people": config.max_people,
                  "decoder": config.decoder_config or {}}
    stage = entry(Cache(root), "extract", key_config)
    manifest_path = out.with_name(out.name + ".manifest.json")
    if out.exists() and manifest_path.exists() and json.loads(manifest_path.read_text()).get("key") == stage.key:
        console.print(f"{out}: up to date (same videos and settings); nothing to do")
        return json.loads(manifest_path.read_text())
    shard = shard or shard_from_env()
    if config.decoder_config and blazepose.is_blazepose(config.backbone):
        raise SkelpipeError("--decoder-setting: OpenPifPaf's decoder settings do not apply to "
                            "--backbone blazepose")
    # a bad backbone / checkpoint fails before anything is written
    net = load_estimator(config.backbone, config.checkpoint)
    stats = RunStats()
    if not stage.done:  # (done: an earlier run committed but stopped before moving the file)
        try:
            with stage.run(shard=shard, on_commit=lambda d: merge_and_drop(d, "poses.h5")) as work:
                if work is not None:
                    stats = extract_to_work(videos, work, config, shard=shard, out_name=None, network=net)
        except NothingExtracted as e:
            summary(e.stats)  # the table of reasons, then the one-line error
            if shard is None:  # no other process shares the private cache: leave nothing
                shutil.rmtree(root, ignore_errors=True)
            raise
    summary(stats, stage)
    return _finish(out, stage, shard)


def _finish(out: Path, stage, shard) -> dict:
    """The store moved to ``out`` and its manifest written, by whichever shard gets here once
    every shard is done; the manifest, or that this shard waits for the others."""
    root, manifest_path = stage.cache.root, out.with_name(out.name + ".manifest.json")
    finish = root.with_name(root.name + ".finish.lock")
    with Lock(finish, f"finishing {out}"):
        if stage.done and (stage.path / "poses.h5").exists():
            manifest = stage.manifest()
            os.replace(stage.path / "poses.h5", out)
            atomic.write_json(manifest_path, manifest)
            shutil.rmtree(root, ignore_errors=True)
            finish.unlink(missing_ok=True)  # every shard is done: nothing left to finish
            console.print(f"wrote {out} ({manifest.get('units', 0)} videos; manifest {manifest_path})")
            return manifest
    if manifest_path.exists() and json.loads(manifest_path.read_text()).get("key") == stage.key:
        return json.loads(manifest_path.read_text())
    console.print(f"shard {shard[0]}/{shard[1]} done; the last shard to finish writes {out}")
    return {"waiting_for_shards": True, "key": stage.key}


def summary(stats: RunStats, stage=None):
    """End-of-run tables: videos done / already done / bad, frames, speed; then each bad item."""

    table = Table(title="extraction")
    for col in ("videos extracted", "already done", "bad videos", "frames", "frames/s"):
        table.add_column(col, justify="right")
    table.add_row(str(stats.videos_done), str(stats.videos_skipped), str(len(stats.bad)), str(stats.frames),
                  f"{stats.fps:,.1f}")
    console.print(table)
    if stage is not None and stage.done:
        bad = [(b["item"], b["reason"]) for b in stage.manifest().get("bad_items", [])]
    elif stage is not None:
        bad = [(b["item"], b["reason"]) for b in
               (json.loads(p.read_text()) for p in sorted((stage.partial / ".bad").glob("*.json")))]
    else:
        bad = stats.bad
    if bad:
        t = Table(title="reported and skipped (also in the manifest)")
        t.add_column("item")
        t.add_column("reason")
        for item, reason in sorted(bad):
            t.add_row(item, reason)
        console.print(t)
