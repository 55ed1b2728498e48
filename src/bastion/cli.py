"""The ``bastion`` command line: a thin typer layer over the library."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from bastion._cli_render import console, progress_bar
from bastion.errors import BastionError

app = typer.Typer(
    name="bastion",
    help="Attack, defend and honestly evaluate image classifiers with adversarial examples.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _command_line() -> str:
    return "bastion " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _fail(e: Exception) -> None:
    console.print(f"[bold red]error:[/] {e}")
    raise typer.Exit(2)


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def train(
    model: Annotated[str, typer.Option(help="Architecture: logreg, mnist-cnn, mnist-cnn-gap, cifar-resnet.")] = "mnist-cnn",
    data: Annotated[str, typer.Option(help="Data set name.")] = "mnist-5k",
    split: Annotated[str, typer.Option(help="Training split, sliceable: 'train[5848:]'.")] = "train",
    val_split: Annotated[str, typer.Option(help="Validation split (clean accuracy each epoch).")] = "test",
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder with the standard data files.")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 5,
    batch_size: Annotated[int, typer.Option(min=1)] = 128,
    lr: Annotated[float, typer.Option()] = 1e-3,
    optimizer: Annotated[str, typer.Option(help="adam or sgd")] = "adam",
    schedule: Annotated[str, typer.Option(help="onecycle, cosine or constant")] = "onecycle",
    weight_decay: Annotated[float, typer.Option()] = 0.0,
    dropout: Annotated[float, typer.Option(help="Dropout rate (mnist-cnn only).")] = 0.0,
    seed: Annotated[int, typer.Option()] = 0,
    defense: Annotated[Optional[str], typer.Option(help="adv (adversarial training) or bart.")] = None,
    attack: Annotated[str, typer.Option(help="With --defense adv: fgsm-rs, pgd or trades.")] = "fgsm-rs",
    eps: Annotated[float, typer.Option(help="With --defense adv: Linf radius.")] = 0.3,
    k: Annotated[int, typer.Option(help="With --defense bart: transforms per barrage.")] = 5,
    init: Annotated[Optional[str], typer.Option(help="Start from this model (name or file) instead of scratch.")] = None,
    out: Annotated[Path, typer.Option(help="Run folder (checkpoint, metrics.json, model.safetensors).")] = Path("runs/train"),
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.pt.")] = False,
    device: Annotated[str, typer.Option()] = "cpu",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Train a classifier (optionally with a defense); writes OUT/model.safetensors."""
    from bastion.data import load_dataset
    from bastion.models import create_model, resolve_model, save_model
    from bastion.recipes import build_training
    from bastion.train import TrainConfig, accuracy, fit

    try:
        train_ds = load_dataset(data, split, data_dir=data_dir)
        val_ds = load_dataset(data, val_split, data_dir=data_dir) if val_split else None
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,  # type: ignore[arg-type]
                          schedule=schedule, weight_decay=weight_decay, seed=seed)  # type: ignore[arg-type]
        if init:
            net = resolve_model(init, device=device)
        else:
            opts = {"dropout": dropout} if dropout else {}
            net = create_model(model, dataset=data, classes=train_ds.classes, seed=seed, **opts)
        objective, callbacks, extra_meta, wrap = build_training(
            defense, net, attack=attack, eps=eps, k=k, val=val_ds, device=device
        )
        with progress_bar(enabled=not quiet) as bar:
            history = fit(net, train_ds, config=cfg, objective=objective, val=val_ds, out_dir=out, resume=resume,
                          device=device, progress=bar, callbacks=callbacks,
                          monitor=extra_meta.get("monitor", "val_acc"), record={"command": _command_line()})
        metrics = {"val_split": f"{data}:{val_split}", "val_acc": history.last.get("val_acc")}
        if val_ds is not None:
            metrics["val_acc"] = accuracy(wrap(net), val_ds, device=device)
        training = {"command": _command_line(), "data": data, "split": split, "seed": seed,
                    "sha256": train_ds.sha256, "config": cfg.__dict__, **extra_meta.get("training", {})}
        net.meta = replace(net.meta, training=training, metrics=metrics)
        path = save_model(net, out / "model.safetensors")
    except BastionError as e:
        _fail(e)
        return
    console.print(f"saved {path}  val accuracy {metrics['val_acc']:.4f}" if metrics["val_acc"] is not None else f"saved {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
