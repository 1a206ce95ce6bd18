"""``skelpipe evaluate``: top-1 / top-5, per-class accuracy and a confusion matrix of a trained model."""

import click

from skelpipe.core.console import console
from skelpipe.core.fields import MAX_BATCH, MAX_SEED, FiniteRange
from skelpipe.learn.evaluate import EvalSet, evaluate
from skelpipe.skeleton import noise


@click.command("evaluate")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="A trained model directory (skelpipe train --out).")
@click.option("--pack", "pack_dir", required=True, type=click.Path(file_okay=False), help="Packed data directory (skelpipe pack).")
@click.option("--split", default="test", show_default=True, help="Which split of the pack.")
@click.option("--which", type=click.Choice(["hq", "lq"]), default=None, help="HQ or LQ skeletons [default: HQ for a teacher, LQ for a student].")
@click.option("--op", type=FiniteRange(0.0, 1.0), default=None, help="Occlusion probability of LQ data [default: the model's training OP].")
@click.option("--occlusion-mode", type=click.Choice(list(noise.MODES)), default=None, help="[default: the model's training mode]")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=None, help="Base seed of the fixed test occlusion draws [default: the pack's test_seed].")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Where to write metrics.json, predictions.csv, confusion.png.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:<i>.")
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=256, show_default=True)
def evaluate_command(model_dir, pack_dir, split, which, op, occlusion_mode, seed, out_dir, device, batch_size):
    """Top-1, top-5 and per-class accuracy of a trained model, a confusion matrix (PNG) and
    per-instance predictions (CSV).

    Teachers are evaluated on HQ test data, students on LQ test data occluded with their
    training OP (one fixed draw per instance).

    \b
    Example:
      skelpipe evaluate --model runs/student-pmsc --pack cache/pack/ab12cd --out runs/student-pmsc/eval
      skelpipe evaluate --model runs/teacher --pack cache/pack/ab12cd --split test --out runs/teacher/eval
    """
    r = evaluate(model_dir, pack_dir, EvalSet(split, which, op, occlusion_mode, seed),
                 out_dir=out_dir, device=device, batch_size=batch_size)
    console.print(f"{r['stage']} on {r['which'].upper()} {r['split']} ({r['n']} instances, OP {r['op']}): "
                  f"top-1 {r['top1']:.4f}  top-5 {r['top5']:.4f}  → {out_dir}")
