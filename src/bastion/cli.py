"""The ``bastion`` command line: a thin typer layer over the library."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import shlex
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape

from bastion._cli_render import console, progress_bar, results
from bastion._device import check_device
from bastion._outputs import OutputFolder, nonfinite_message
from bastion.errors import BastionError, OutputError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torch import Tensor, nn

    from bastion.attacks.base import Attack, TargetSpec
    from bastion.data import LabelledImages
    from bastion.data.base import ImageDataset
    from bastion.distributed import World
    from bastion.eval import Evaluation, RobustnessReport
    from bastion.models import Preprocessing
    from bastion.web.context import DemoContext

app = typer.Typer(
    name="bastion",
    help="Attack, defend and honestly evaluate image classifiers with adversarial examples.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _command_line(ctx: typer.Context) -> str:
    """The invoked command with every option spelled out (defaults included), so it reproduces the run."""
    parts = ["bastion", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        opts = getattr(param, "opts", None)
        if value is None or not opts or not opts[0].startswith("-"):
            continue
        flag = opts[0]
        if isinstance(value, (list, tuple)):  # a repeatable option: once per value, nothing when empty
            for v in value:
                parts += [flag, shlex.quote(str(v))]
            continue
        if getattr(param, "is_flag", False) and isinstance(value, bool):  # --no-X when off, if it has one
            parts += [flag] if value else param.secondary_opts[:1]
            continue
        parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


def _fail(e: Exception) -> NoReturn:
    # one line however long (not wrapped at the console's width when redirected); its own brackets kept
    console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
    raise typer.Exit(2)


#: what each command writes into its --out folder
ATTACK_OUTPUTS = ("adversarial.safetensors", "summary.json", "figure.png")
EVALUATE_OUTPUTS = ("results.json", "results.csv", "report.html")
TRAIN_OUTPUTS = ("checkpoint.pt", "metrics.json", "model.safetensors")


def _warn_nonfinite(name: str, where: list[str]) -> None:
    if where:
        console.print(f"[bold yellow]warning:[/] {escape(nonfinite_message(name, where))}")


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Bad input (a :class:`BastionError`) ends the command with one line and exit status 2, not a traceback."""
    try:
        yield
    except BastionError as e:
        _fail(e)


def _interrupted(out: Path, done: str, task: str) -> NoReturn:
    """Ctrl-C: where the part done is and how to finish the rest, not a traceback (exit status 130)."""
    console.print(f"interrupted: the {done} finished so far are in {out}/results.json (marked partial); run the same "
                  f"command with --resume to finish the {task}")
    raise typer.Exit(130) from None


def _write_failed(e: OSError) -> NoReturn:
    """A write that failed after the work (disk full, permissions changed): one line, not a traceback."""
    _fail(OutputError(f"cannot write {e.filename or 'an output'}: {e.strerror or e}"))


#: the --threads option of the commands that compute (attack, evaluate, train, demo)
Threads = Annotated[int | None, typer.Option(
    min=1, help="torch threads (default: the CPUs available minus those other processes keep busy).")]
Device = Annotated[str, typer.Option(help="Torch device: cpu, cuda, cuda:N or mps.")]
Quiet = Annotated[bool, typer.Option(help="No progress bars.")]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Replace the outputs an earlier run left in OUT (refused otherwise).")]
Seed = Annotated[int, typer.Option()]


@dataclass(frozen=True)
class Job:
    """How train and evaluate run (see :func:`_gathered`): the device, progress bars, torch threads and, under
    torchrun, the timeout."""

    device: Device = "cpu"
    quiet: Quiet = False
    dist_timeout: Annotated[float | None, typer.Option(
        help="Under torchrun: seconds a process may wait for, or hear nothing from, another before the job stops "
             "(default: $BASTION_DIST_TIMEOUT, else 300).")] = None
    threads: Threads = None

    def join(self) -> tuple[World, str]:
        """This process's place in a torchrun job (alone without one) and its device (cuda: cuda:LOCAL_RANK)."""
        from bastion.distributed import World

        world = World.from_env(device=check_device(self.device), timeout=self.dist_timeout)
        return world, str(world.device(self.device))


def _use_threads(threads: int | None, *, quiet: bool = False) -> None:
    """Set torch's thread count for this run (see bastion._threads) and say which was chosen."""
    import torch

    from bastion._threads import choose_threads

    choice = choose_threads(threads)
    torch.set_num_threads(choice.threads)
    if not quiet and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 says it
        console.print(f"using {choice.reason}", highlight=False)


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


# ------------------------------------------------------------------------------------------------------------------
# Your own model and images (#21): the options every command that names a model or data shares, and their helpers.

_MODEL_HELP = ("A shipped model name, a bastion .safetensors file, or your own: FILE.py:FUNCTION or package.module:FUNCTION "
               "(returns an nn.Module; weights with --weights), a TorchScript file, torchvision:NAME or timm:NAME.")


@dataclass(frozen=True)
class OwnModel:
    """The options that describe your own model, shared by train, attack, evaluate and serve (see
    :func:`_gathered`)."""

    weights: Annotated[Path | None, typer.Option(
        help="Weights for your model: safetensors, or a state dict saved with torch.save (read with "
             "weights_only=True; never unpickled).")] = None
    preset: Annotated[str | None, typer.Option(
        help="Your model's preprocessing preset: imagenet (ImageNet mean/std, resize 256, centre crop 224, its 1,000 "
             "class names).")] = None
    mean: Annotated[str | None, typer.Option(
        help="Your model's normalization mean on pixels in [0, 1], per channel: 0.485,0.456,0.406 "
             "(with --std).")] = None
    std: Annotated[str | None, typer.Option(help="Your model's normalization std, per channel (with --mean).")] = None
    classes: Annotated[Path | None, typer.Option(
        help="Your model's class names, one a line, in its output order.")] = None
    input_size: Annotated[str | None, typer.Option(
        help="The input size of your model: 224, 224x160 (height x width) or 1x28x28 (channels first); images are "
             "resized (shorter side) and centre-cropped to it.")] = None
    resize: Annotated[str | None, typer.Option(
        help="Resize images before the crop: N (the shorter side) or HxW (exactly).")] = None
    center_crop: Annotated[str | None, typer.Option(
        "--center-crop", help="Centre-crop images to N or HxW (the model's input size, as --input-size).")] = None

    def preprocessing(self) -> Preprocessing | None:
        """What the options say about your model's inputs (None when they say nothing): a preset, overridden field
        by field by --mean/--std, --classes, --input-size/--center-crop and --resize."""
        from bastion.models import Preprocessing, preset, read_classes

        if replace(self, weights=None) == OwnModel():
            return None
        channels, size = None, None
        if self.input_size is not None:
            dims = _sizes(self.input_size, "--input-size", channels=True)
            channels = dims[0] if len(dims) == 3 else None
            size = (dims[-2], dims[-1]) if len(dims) >= 2 else (dims[0], dims[0])
        if self.center_crop is not None:
            crop = _sizes(self.center_crop, "--center-crop")
            crop_hw = (crop[0], crop[-1])
            if size is not None and size != crop_hw:
                raise BastionError(f"--input-size {self.input_size} and --center-crop {self.center_crop} disagree (the "
                                   "crop is the model's input size): give one")
            size = crop_hw
        resized: int | tuple[int, int] | None = None
        if self.resize is not None:
            r = _sizes(self.resize, "--resize")
            resized = r[0] if len(r) == 1 else (r[0], r[1])
        own = Preprocessing(mean=_numbers(self.mean, "--mean") if self.mean else None,
                            std=_numbers(self.std, "--std") if self.std else None, channels=channels, size=size,
                            resize=resized, classes=read_classes(self.classes) if self.classes is not None else None)
        return own.over(preset(self.preset)) if self.preset is not None else own

    def load(self, spec: str, device: str) -> nn.Module:
        """The model ``spec`` (see --model) with these options."""
        from bastion.models import resolve_model

        return resolve_model(spec, device=device, weights=self.weights, preprocessing=self.preprocessing())


def _gathered(cls: type) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A decorator that gives a command the options of the dataclass ``cls`` (:class:`OwnModel`, :class:`Job`) in
    place of its parameter of that type, and calls it with their values gathered into one ``cls``. An option the
    command declares itself (evaluate's --preset) keeps that declaration, in the same place among the others, and
    comes to the command as its own argument."""
    hints = typing.get_type_hints(cls, include_extras=True)

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        sig = inspect.signature(command, eval_str=True)
        slot = next(p for p in sig.parameters.values() if p.annotation is cls)
        options = [sig.parameters.get(f.name) or inspect.Parameter(f.name, slot.kind, default=f.default,
                                                                   annotation=hints[f.name]) for f in fields(cls)]
        params = [q for p in sig.parameters.values() if p.name not in hints for q in (options if p is slot else [p])]
        gathered = [name for name in hints if name not in sig.parameters]

        @functools.wraps(command)
        def run(**kwargs: Any) -> None:
            command(**{slot.name: cls(**{name: kwargs.pop(name) for name in gathered})}, **kwargs)

        run.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        return run

    return decorate


LabelsOption = Annotated[Path | None, typer.Option(
    help="With --data images:PATH: a CSV of file,label rows (labels are class names or numbers).")]
_DATA_HELP = ("A data set name (mnist-5k, mnist, fashion-mnist, cifar10, coloured-mnist-5k, coloured-mnist), or your "
              "images: folder:PATH (one subfolder per class) or images:PATH with --labels FILE.csv.")


def _numbers(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise BastionError(f"{option} takes numbers separated by commas, e.g. 0.485,0.456,0.406; got {text!r}") from None


def _sizes(text: str, option: str, *, channels: bool = False) -> tuple[int, ...]:
    parts = text.lower().replace("*", "x").split("x")
    allowed = (1, 2, 3) if channels else (1, 2)
    if len(parts) not in allowed or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        form = "N, HxW or CxHxW" if channels else "N or HxW"
        raise BastionError(f"{option} takes a size in pixels, {form}; got {text!r}")
    return tuple(int(p) for p in parts)


def _open_data(spec: str, split: str, data_dir: Path | None, labels: Path | None, net: nn.Module, device: str, *,
               quiet: bool = False) -> tuple[nn.Module, LabelledImages]:
    """A data set by name, or your images (listed now, decoded batch by batch), prepared as ``net`` expects them (the
    files skipped and the images converted are noted); and ``net`` with the data's class names when it has none of
    its own (your model without a preset or --classes), checked to return one score per class."""
    from bastion.data import is_image_source, load_dataset, open_images
    from bastion.data.images import describe_converted, describe_skipped
    from bastion.models.user import UserModel, check_outputs, preprocessing_of, with_classes

    ds: LabelledImages
    if not is_image_source(spec):
        if labels is not None:
            raise BastionError("--labels goes with --data images:PATH (a CSV of file,label rows)")
        ds = load_dataset(spec, split, data_dir=data_dir)
    else:
        pre = preprocessing_of(net)
        ds = open_images(spec, transform=pre.transform(), labels=labels, classes=pre.classes)
        for line in (describe_skipped(ds), describe_converted(ds)):
            if line and not quiet:
                console.print(f"note: {escape(line)}", soft_wrap=True)
    own = getattr(net, "classes", None)
    if isinstance(net, UserModel) and own is None:
        net = with_classes(net, ds.classes)
    where = ("the model's class names" if own is not None else
             f"the class folders of {ds.name}" if ds.name.startswith("folder:") else f"the labels of {ds.name}")
    check_outputs(net, ds.batch(slice(0, 1)).to(device), tuple(getattr(net, "classes", ds.classes)), where=where)
    return net, ds


def _class_number(target: str | None, classes: Sequence[str]) -> str | None:
    """``--target`` as a class number: a class name of the model is looked up (``gibbon`` -> ``368``)."""
    from bastion.data.images import class_index

    if target is None or target in ("random", "least-likely") or target.lstrip("-").isdigit():
        return target
    try:
        return str(class_index([target], classes, what="--target")[0])
    except BastionError:
        listed = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        raise BastionError(f"--target must be a class number, a class name of the model ({listed}), 'random' or "
                           f"'least-likely'; got {target!r}") from None


def _single_image(image: Path, net: nn.Module, device: str, target: str | None) -> ImageDataset:
    """One image file, prepared as ``net`` expects, labelled with the model's own prediction (the label the attack
    moves away from)."""
    from bastion._model import checked_forward
    from bastion.data.images import describe_converted, single_image
    from bastion.models.user import check_outputs, preprocessing_of

    pre = preprocessing_of(net)
    ds = single_image(image, transform=pre.transform(), classes=pre.classes or ())
    note = describe_converted(ds)
    if note:
        console.print(f"note: {escape(note)}", soft_wrap=True)
    loaded = ds.load()
    x = loaded.images.to(device)
    out = checked_forward(net, x)
    classes = tuple(getattr(net, "classes", ())) or tuple(str(i) for i in range(out.shape[1]))
    check_outputs(net, x, classes, where="the model's class names")
    pred = out.argmax(1).cpu()
    if target is not None and target.isdigit() and int(target) == int(pred[0]):
        raise BastionError(f"the model already classifies {image.name} as {classes[int(pred[0])]} (class {target}): "
                           "pick another --target")
    return replace(loaded, labels=pred, classes=classes)


def _predictions(logits: Tensor, logits_adv: Tensor, classes: Sequence[str], n: int = 4) -> list[str]:
    """``"giant panda 57.7% -> gibbon 99.3%"`` for the first ``n`` images."""
    import torch

    p, pa = torch.softmax(logits.float(), 1), torch.softmax(logits_adv.float(), 1)
    out = []
    for i in range(min(n, p.shape[0])):
        (c0, k0), (c1, k1) = p[i].max(0), pa[i].max(0)
        out.append(f"{classes[int(k0)]} {float(c0):.1%} -> {classes[int(k1)]} {float(c1):.1%}")
    return out


@app.command()
@_gathered(OwnModel)
@_gathered(Job)
def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(
        help="Architecture: logreg, mnist-cnn, mnist-cnn-gap, cifar-resnet; or your own, FILE.py:FUNCTION or "
             "package.module:FUNCTION (starting from --weights when given).")] = "mnist-cnn",
    own: OwnModel = OwnModel(),
    labels: LabelsOption = None,
    data: Annotated[str, typer.Option(help=_DATA_HELP + " Your images are decoded into memory for training.")] = "mnist-5k",
    split: Annotated[str, typer.Option(help="Training split, sliceable: 'train[5848:]'.")] = "train",
    val_split: Annotated[str, typer.Option(
        help="Validation split (clean accuracy each epoch); with your own images: a second source, folder:PATH or "
             "images:PATH (the same --labels file lists both), or '' for none.")] = "test",
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the standard data files.")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 5,
    batch_size: Annotated[int, typer.Option(min=1)] = 128,
    lr: Annotated[float, typer.Option()] = 1e-3,
    optimizer: Annotated[str, typer.Option(help="adam or sgd")] = "adam",
    schedule: Annotated[str, typer.Option(help="onecycle, cosine or constant")] = "onecycle",
    weight_decay: Annotated[float, typer.Option()] = 0.0,
    dropout: Annotated[float, typer.Option(help="Dropout rate (mnist-cnn only).")] = 0.0,
    seed: Seed = 0,
    defense: Annotated[str | None, typer.Option(help="adv (adversarial training) or bart.")] = None,
    attack: Annotated[str, typer.Option(help="With --defense adv: fgsm (Goodfellow et al.), fgsm-rs, pgd or trades.")] = "fgsm-rs",
    eps: Annotated[float, typer.Option(help="With --defense adv: Linf radius.")] = 0.3,
    k: Annotated[int, typer.Option(help="With --defense bart: transforms per barrage.")] = 5,
    variants: Annotated[int, typer.Option(min=1, help="With --defense bart: barrages of each image per step.")] = 1,
    clean: Annotated[bool, typer.Option(help="With --defense bart: also train on the clean images.")] = True,
    ramp_epochs: Annotated[float, typer.Option(help="With --defense adv: eps ramp-up length in epochs.")] = 0.0,
    adv_ratio: Annotated[float | None, typer.Option(
        help="With --defense adv: share of adversarial examples per batch (default 0.5 for fgsm, else 1).")] = None,
    alpha: Annotated[float | None, typer.Option(help="With --defense adv: step size (default per recipe).")] = None,
    adv_steps: Annotated[int | None, typer.Option(help="With --defense adv: PGD/TRADES steps.")] = None,
    hidden: Annotated[int | None, typer.Option(help="Hidden units of mnist-cnn's dense layer (default 100).")] = None,
    init: Annotated[str | None, typer.Option(
        help="Start from this model (name or file) instead of scratch; for a defended model, its classifier.")] = None,
    out: Annotated[Path, typer.Option(help="Run folder (checkpoint, metrics.json, model.safetensors).")] = Path("runs/train"),
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.pt.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start over in an OUT that holds an earlier run, "
                                                               "replacing its files (refused otherwise).")] = False,
    job: Job = Job(),
) -> None:
    """Train a classifier (optionally with a defense); writes OUT/model.safetensors."""
    from bastion._wrap import innermost
    from bastion.data import load_dataset
    from bastion.models import create_model, resolve_model, save_model
    from bastion.models.classifier import Classifier
    from bastion.models.user import UserModel, save_weights
    from bastion.training import TrainConfig, accuracy, fit
    from bastion.training.recipes import build_training

    with _one_line_errors():
        world, device = job.join()
        _check_train_options(model, init, dropout=dropout, weight_decay=weight_decay, hidden=hidden)
        # every process checks (nothing is written before the first epoch ends), so that a refused --out stops
        # them all with the same message instead of leaving the others to fail in a collective
        _check_run_folder(out, resume=resume, overwrite=overwrite, quiet=job.quiet or world.rank != 0)
        net: nn.Module | None = None
        if _trains_own_model(model, init, own.weights):
            net, train_ds, val_ds = _own_training(model, own=own, data=data, split=split, val_split=val_split,
                                                  data_dir=data_dir, labels=labels, device=device)
        else:
            train_ds = load_dataset(data, split, data_dir=data_dir)
            val_ds = load_dataset(data, val_split, data_dir=data_dir) if val_split else None
        present = int(train_ds.labels.unique().numel())
        if present < train_ds.num_classes and not job.quiet and world.rank == 0:
            console.print(f"[bold yellow]warning:[/] {escape(data)}:{escape(split)} holds only {present} of the "
                          f"{train_ds.num_classes} classes (mnist-5k is sorted by class: a slice like train[:500] is "
                          "zeros and ones); the model cannot learn the others")
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,  # type: ignore[arg-type]
                          schedule=schedule, weight_decay=weight_decay, seed=seed)  # type: ignore[arg-type]
        if net is None and init:
            loaded = resolve_model(init, device=device)
            start = innermost(loaded)  # a defended model: the classifier inside it
            if not isinstance(start, Classifier):
                raise BastionError(f"--init {init}: no classifier inside ({type(start).__name__}); nothing to train")
            if start is not loaded and not job.quiet:
                console.print(f"--init {init}: starting from the classifier inside its {type(loaded).__name__} "
                              "(the saved model is a plain classifier; add --defense to train with one)")
            net = start
        elif net is None:
            opts = {k: v for k, v in (("dropout", dropout), ("hidden", hidden)) if v}
            net = create_model(model, dataset=data, classes=train_ds.classes, seed=seed, **opts)
        objective, callbacks, extra_meta, wrap = build_training(
            defense, net, val=val_ds, device=device, attack=attack, eps=eps, k=k, epochs=epochs,
            ramp_epochs=ramp_epochs, adv_ratio=adv_ratio, alpha=alpha, steps=adv_steps, variants=variants, clean=clean)
        world.broadcast_model(net)
        _use_threads(job.threads, quiet=job.quiet)
        with progress_bar(enabled=not job.quiet and world.rank == 0) as bar:
            history = fit(net, train_ds, config=cfg, objective=objective, val=val_ds, out_dir=out, resume=resume,
                          device=device, progress=bar, callbacks=callbacks, world=world if world.distributed else None,
                          monitor=extra_meta.get("monitor", "val_acc"), record={"command": _command_line(ctx)})
        val_acc = accuracy(wrap(net), val_ds, device=device) if val_ds is not None else history.last.get("val_acc")
        metrics = {"val_split": f"{data}:{val_split}", "val_acc": val_acc}
        training = {"command": _command_line(ctx), "data": data, "split": split, "seed": seed,
                    "sha256": train_ds.sha256, "config": cfg.__dict__, **extra_meta.get("training", {})}
        path = out / "model.safetensors"
        if isinstance(net, Classifier):
            net.meta = replace(net.meta, training=training, metrics=metrics)
            if world.rank == 0:
                save_model(net, path)
        elif world.rank == 0 and isinstance(net, UserModel):
            save_weights(net, path, {"training": training, "metrics": metrics})
        world.close()
    if world.rank == 0:
        results.print(f"saved {path}" + (f"  val accuracy {val_acc:.4f}" if val_acc is not None else ""))


def _check_train_options(model: str, init: str | None, *, dropout: float, weight_decay: float,
                         hidden: int | None) -> None:
    if not 0.0 <= dropout < 1.0:
        raise BastionError(f"--dropout must be in [0, 1), got {dropout}")
    if weight_decay < 0:
        raise BastionError(f"--weight-decay must be >= 0, got {weight_decay}")
    if hidden is not None and hidden < 1:
        raise BastionError(f"--hidden must be >= 1, got {hidden}")
    if init is None and model != "mnist-cnn" and (dropout or hidden is not None):
        given = " and ".join(o for o, v in (("--dropout", dropout), ("--hidden", hidden)) if v)
        raise BastionError(f"{given} only apply to --model mnist-cnn, not {model}")


def _trains_own_model(model: str, init: str | None, weights: Path | None) -> bool:
    """Whether ``bastion train --model`` names your own model (a factory) rather than a bastion architecture."""
    from bastion.models.user import is_user_spec

    own = is_user_spec(model)
    if own and init is not None:
        raise BastionError("--init starts a bastion architecture from a model; your own model starts from --weights")
    if not own and weights is not None:
        raise BastionError(f"--weights goes with your own model (--model FILE.py:FUNCTION), not {model}; a bastion "
                           "architecture starts from --init")
    return own


def _own_training(model: str, *, own: OwnModel, data: str, split: str, val_split: str, data_dir: Path | None,
                  labels: Path | None, device: str) -> tuple[nn.Module, ImageDataset, ImageDataset | None]:
    """Your model (a factory, from --weights when given) and its training and validation images, in memory."""
    from bastion.data import is_image_source, load_dataset

    net, files = _open_data(data, split, data_dir, labels, own.load(model, device), device)
    train_ds = files.load()
    if not val_split:
        return net, train_ds, None
    if is_image_source(data):
        if not is_image_source(val_split):
            raise BastionError(f"--val-split {val_split!r}: with your own images, give a second source (folder:PATH or "
                               "images:PATH), or '' for none")
        return net, train_ds, _open_data(val_split, "all", None, labels, net, device)[1].load()
    return net, train_ds, load_dataset(data, val_split, data_dir=data_dir)


def _check_run_folder(out: Path, *, resume: bool, overwrite: bool, quiet: bool) -> None:
    """A folder holding a run is only continued (--resume) or started over (--overwrite), never silently
    overwritten; a resumed run updates its own files."""
    from bastion.training.loop import CHECKPOINT, METRICS

    if resume and overwrite:
        raise BastionError("--resume continues the run in --out and --overwrite starts it over: pass one of them")
    has_run = any(os.path.lexists(out / name) for name in (CHECKPOINT, "model.safetensors"))
    if has_run and not (resume or overwrite):
        raise OutputError(f"{out} already holds a training run; pass --resume to continue it, --overwrite to start "
                          "over, or choose another --out")
    OutputFolder(out, TRAIN_OUTPUTS, overwrite=overwrite or resume).check(
        advice="pass --overwrite to replace it, --resume to continue a run, or choose another --out")
    if resume and not quiet:
        console.print(f"resuming the run in {out}{_epochs_done(out / METRICS)}" if (out / CHECKPOINT).exists() else
                      f"note: no {CHECKPOINT} in {out}: nothing to resume, training from the start")


def _epochs_done(metrics: Path) -> str:
    """': N epochs done' from a run's metrics.json ('' when it cannot be read: the checkpoint decides)."""
    try:
        epochs = json.loads(metrics.read_text())["epochs"]
        return f" ({len(epochs)} epoch{'s' if len(epochs) != 1 else ''} done)"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _parse_options(pairs: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings -> options (a VALUE that parses as JSON is taken as such: 0.1, 3, true, [0, 1])."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise BastionError(f"--set takes KEY=VALUE, got {pair!r}")
        if key in out:
            raise BastionError(f"--set {key} given twice")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def _targeted(ds: ImageDataset, target: str | None) -> tuple[ImageDataset, TargetSpec]:
    """The images to attack and the attack's target (``target`` from :func:`_class_number`): with a class number,
    the images already of that class are left out (a targeted attack on them has nothing to do), with a note."""
    import torch

    if target is None or not target.lstrip("-").isdigit():
        return ds, target  # type: ignore[return-value]  # None, 'random' or 'least-likely'
    keep = (ds.labels != int(target)).nonzero().squeeze(1)
    if keep.numel() == 0:
        raise BastionError(f"every selected image is already of the target class {target}")
    if keep.numel() < len(ds):
        console.print(f"note: {len(ds) - keep.numel()} of the {len(ds)} images are already of class {target}; "
                      "attacking the other ones")
        ds = ds.subset(keep, split=ds.split)
    return ds, torch.full((len(ds),), int(target), dtype=torch.int64)


@app.command()
@_gathered(OwnModel)
def attack(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help=_MODEL_HELP)] = "mnist-cnn",
    own: OwnModel = OwnModel(),
    image: Annotated[Path | None, typer.Option(
        help="Attack one image file (PNG, JPEG or WebP) instead of --data; its label is the model's prediction.")] = None,
    labels: LabelsOption = None,
    attack: Annotated[str, typer.Option("--attack", help="fgsm, bim, pgd, jsma, ...")] = "pgd",
    eps: Annotated[float | None, typer.Option(
        help="Perturbation budget (default 0.3 for the attacks that have one; JSMA's budget is --set gamma=...).")] = None,
    steps: Annotated[int | None, typer.Option(help="Iterations (iterative attacks).")] = None,
    step_size: Annotated[float | None, typer.Option(help="Step size (iterative attacks).")] = None,
    norm: Annotated[str | None, typer.Option(help="linf or l2.")] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--set", help="Any other option of the attack, KEY=VALUE (repeatable; values parsed as JSON when they can "
                      "be), e.g. --set gamma=0.1 --set output=probs for JSMA.")] = None,
    target: Annotated[str | None, typer.Option(
        help="Target class (a number, or a class name such as gibbon), 'random' or 'least-likely'.")] = None,
    defense: Annotated[str, typer.Option(help="Test-time defense: none, bart, hide-probs.")] = "none",
    k: Annotated[int, typer.Option(min=1, help="With --defense bart: transforms per barrage.")] = 5,
    data: Annotated[str, typer.Option(help=_DATA_HELP)] = "mnist-5k",
    split: Annotated[str, typer.Option()] = "all",
    data_dir: Annotated[Path | None, typer.Option()] = None,
    n: Annotated[int, typer.Option(min=1, help="Number of images, evenly spaced over the split (every class of a "
                                                "label-sorted set such as mnist-5k); a slice like --split 'all[:16]' "
                                                "takes the first ones.")] = 16,
    seed: Seed = 0,
    out: Annotated[Path, typer.Option()] = Path("runs/attack"),
    overwrite: Overwrite = False,
    device: Device = "cpu",
    threads: Threads = None,
) -> None:
    """Attack a batch of images; writes adversarial tensors, a JSON summary and the classic figure."""
    import torch
    from safetensors.torch import save_file

    from bastion.factory import apply_defense, attack_options, make_attack
    from bastion.viz.figures import png_bytes, triptych

    with _one_line_errors():
        check_device(device)
        extra = _parse_options(option or [])
        named = {"eps": eps, "steps": steps, "step_size": step_size, "norm": norm}
        twice = sorted(key for key in extra if named.get(key) is not None)
        if twice:
            raise BastionError(f"{', '.join(twice)} given twice: as --{twice[0].replace('_', '-')} and as --set")
        if eps is None and "eps" in attack_options(attack) and "eps" not in extra:
            named["eps"] = 0.3
        atk = make_attack(attack, **{**named, **extra}, checked=set(extra))
        _check_linf_eps([atk], [getattr(atk, "eps", 0.0)])
        net = own.load(model, device)
        outputs = OutputFolder(out, ATTACK_OUTPUTS, overwrite=overwrite).check()
        if image is not None:
            target = _class_number(target, getattr(net, "classes", ()))
            ds = _single_image(image, net, device, target)
        else:
            net, full = _open_data(data, split, data_dir, labels, net, device)
            target = _class_number(target, getattr(net, "classes", full.classes))
            if n > len(full):
                console.print(f"note: --n {n} is more than the {len(full)} images of {escape(data)}:{escape(split)}: "
                              f"attacking all {len(full)}")
            ds = full.spread(n).load()
        net = apply_defense(net, defense, k=k)
        ds, spec = _targeted(ds, target)
        x, y = ds.images.to(device), ds.labels.to(device)
        _use_threads(threads)
        res = atk(net, x, y, target=spec, generator=torch.Generator().manual_seed(seed),
                  keys=ds.indices.to(device) if ds.indices is not None else None)
    tensors = {"x": x.cpu().contiguous(), "x_adv": res.x_adv.cpu().contiguous(), "y": y.cpu(),
               "pred_adv": res.pred_adv.cpu(), "success": res.success.cpu().to(torch.uint8)}
    if res.target is not None:
        tensors["target"] = res.target.cpu()
    names = getattr(net, "classes", tuple(str(i) for i in range(res.logits_adv.shape[1])))
    shown_preds = _predictions(res.logits_clean, res.logits_adv, names)
    summary = {"command": _command_line(ctx), "model": model, "defense": defense,
               "data": str(image) if image is not None else f"{data}:{split}", "attack": atk.to_dict(), "target": target,
               "predictions": shown_preds, **res.summary()}
    k = min(len(ds), 8)
    try:
        outputs.write_with("adversarial.safetensors", lambda tmp: save_file(
            tensors, str(tmp), metadata={"attack": json.dumps(atk.to_dict())}))
        _warn_nonfinite(str(out / "summary.json"), outputs.write_json("summary.json", summary))
        outputs.write_bytes("figure.png", png_bytes(triptych(x[:k], res.x_adv[:k], res.logits_clean[:k],
                                                             res.logits_adv[:k], names, y=y[:k])))
    except OSError as e:
        _write_failed(e)
    ok = int(res.success.sum())
    norms = (f"over the {ok} successful: mean Linf {summary['mean_linf_success']:.3f}, L2 {summary['mean_l2_success']:.3f}, "
             f"L0 {summary['mean_l0_success']:.1f}" if ok else "no successful example")
    results.print(f"{atk.name}: success {summary['success_rate']:.1%}, robust accuracy {summary['robust_accuracy']:.1%}; "
                  f"{norms}; {summary['seconds']:.2f}s -> {out}", soft_wrap=True)
    if k < len(ds):
        console.print(f"figure.png shows the first {k} of the {len(ds)} images; summary.json has them all")
    if len(ds) <= len(shown_preds):
        for line in shown_preds:
            results.print(escape(line), soft_wrap=True, highlight=False)
    if getattr(net, "randomized", False):
        console.print("note: this model is randomized: the attack ran every step (no early stop) and each result "
                      "is judged over several fresh draws of the model; still, one naive run understates what an "
                      "attacker can do: `bastion evaluate` adds adaptive attacks (EOT/BPDA) beside it")


@app.command()
@_gathered(OwnModel)
@_gathered(Job)
def evaluate(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help=_MODEL_HELP)] = "mnist-cnn",
    own: OwnModel = OwnModel(),
    preset: Annotated[list[str] | None, typer.Option(
        help="imagenet: your model's preprocessing preset (ImageNet mean/std, resize 256, centre crop 224, its 1,000 "
             "class names); autoattack: AutoAttack's cascade (APGD-CE, APGD-T, FAB-T, Square; on a randomized model "
             "its rand version: APGD-CE and APGD-DLR through EOT over 20 draws) instead of --attacks, its robust "
             "accuracy first in the report. Give both as --preset imagenet --preset autoattack.")] = None,
    labels: LabelsOption = None,
    defense: Annotated[str, typer.Option(help="Test-time defense: none, bart, hide-probs.")] = "none",
    k: Annotated[int, typer.Option(min=1, help="With --defense bart: transforms per barrage.")] = 5,
    attacks: Annotated[str | None, typer.Option(help="Comma-separated suite, in cascade order (default fgsm,bim,pgd).")] = None,
    eps: Annotated[str | None, typer.Option(help="start:stop:step or a comma list (default 0:0.3:0.05; 0.3 with "
                                                 "--preset autoattack).")] = None,
    steps: Annotated[int | None, typer.Option(help="Steps of iterative attacks (default per attack).")] = None,
    step_size: Annotated[float | None, typer.Option(help="Step size at eps=0.3 (scaled with eps).")] = None,
    restarts: Annotated[int | None, typer.Option(help="PGD restarts.")] = None,
    adaptive: Annotated[str, typer.Option(help="For randomized/defended models: eot-bpda, eot, bpda or none.")] = "auto",
    eot_n: Annotated[int | None, typer.Option(help="Draws per EOT gradient (default 8; 20 with --preset autoattack).")] = None,
    cascade: Annotated[bool, typer.Option(help="Run each attack only on points still robust (AutoAttack).")] = True,
    data: Annotated[str, typer.Option(help=_DATA_HELP)] = "mnist-5k",
    split: Annotated[str, typer.Option()] = "all",
    data_dir: Annotated[Path | None, typer.Option()] = None,
    n: Annotated[int, typer.Option("--n", "--images", min=1,
                                   help="Number of images, evenly spaced over the split (every class of a label-sorted "
                                        "set such as mnist-5k; a slice like --split 'all[:1000]' takes the first ones); "
                                        "--images under torchrun, whose parser takes --n for its own "
                                        "--nnodes/--nproc-per-node.")] = 1000,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Images per attack call (default: 256, fewer for large images: about 8.4M input values).")] = None,
    seed: Seed = 0,
    out: Annotated[Path, typer.Option()] = Path("runs/evaluate"),
    overwrite: Overwrite = False,
    resume: Annotated[bool, typer.Option(
        help="Finish an interrupted evaluation from OUT/results.json (run the same command again with --resume); "
             "the results equal an uninterrupted run's.")] = False,
    job: Job = Job(),
) -> None:
    """Evaluate robustness over an eps grid; writes results.json, results.csv and report.html."""
    from bastion.attacks import MinimumNormAttack
    from bastion.eval import Evaluation
    from bastion.factory import apply_defense, make_attack_lenient, parse_eps
    from bastion.viz.html import evaluation_html

    with _one_line_errors():
        world, device = job.join()
        model_preset, suite_preset = _split_presets(preset)
        net = replace(own, preset=model_preset).load(model, device)
        outputs = OutputFolder(out, EVALUATE_OUTPUTS, overwrite=overwrite or resume)
        if world.rank == 0:
            outputs.check()
        earlier = _earlier_results(out, resume=resume, distributed=world.distributed, quiet=job.quiet)
        net, full = _open_data(data, split, data_dir, labels, net, device, quiet=world.rank != 0)
        net = apply_defense(net, defense, k=k, seed=seed)
        ds = full.spread(n)
        if suite_preset is not None:
            ev = _autoattack(net, ds, attacks=attacks, eps=eps or "0.3", steps=steps, restarts=restarts,
                             adaptive=adaptive, eot_n=eot_n or 20, cascade=cascade, batch_size=batch_size, seed=seed,
                             device=device)
        else:
            suite = [make_attack_lenient(a.strip(), eps=0.3, steps=steps, step_size=step_size, restarts=restarts)
                     for a in (attacks or "fgsm,bim,pgd").split(",") if a.strip()]
            ev = Evaluation(suite=suite, eps_grid=parse_eps(eps or "0:0.3:0.05"), batch_size=batch_size,
                            cascade=cascade, seed=seed, adaptive=_adaptive_models(net, adaptive, eot_n or 8))
        suite = list(ev.suite)
        grid = ev.eps_grid or [0.3]
        _check_linf_eps(suite, grid)
        if not job.quiet and world.rank == 0:
            _warn_training_overlap(net, data, split)
            fixed = [a.name for a in suite if a.radius is None and not isinstance(a, MinimumNormAttack)]
            if fixed:
                console.print(f"note: {', '.join(fixed)} has no radius: --eps does not apply to it (it runs once, "
                              "with its own budget, and has no point on the accuracy-vs-eps chart)")
            curves = [f"{a.name} ({a.minimized_norm})" for a in suite if isinstance(a, MinimumNormAttack)]
            if curves:
                console.print(f"note: {', '.join(curves)}: a minimum-norm attack runs once and gets a row at every "
                              "eps, in its own norm (an image counts as broken at eps when its smallest adversarial "
                              "perturbation is within eps)")
        _use_threads(job.threads, quiet=job.quiet)
        def save_partial(partial: RobustnessReport) -> None:
            outputs.write_json("results.json", partial.to_dict())

        try:
            with progress_bar(enabled=not job.quiet and world.rank == 0) as bar:
                report = ev.run(net, ds, device=device, progress=bar, command=_command_line(ctx), world=world,
                                resume=earlier, on_partial=None if world.distributed else save_partial)
        except KeyboardInterrupt:
            if world.distributed:
                raise
            _interrupted(out, "rows", "evaluation")
    if world.rank == 0:
        from bastion.viz.examples import example_blocks

        try:  # what was computed is written first: the examples below run one more attack
            _warn_nonfinite(str(out / "results.json"), outputs.write_json("results.json", report.to_dict()))
            outputs.write_text("results.csv", report.to_csv())
            # the examples: the suite's last (strongest) attack; a preset's first (Square's 5,000 queries are slow)
            strongest = (suite[0] if suite_preset is not None else suite[-1]).at_eps(max(grid))
            extra = ["<h2>Examples</h2>", *example_blocks(net, ds, strongest, device=device, seed=seed)]
            outputs.write_text("report.html", evaluation_html(report, extra=extra))
        except OSError as e:
            _write_failed(e)
        except BastionError as e:
            _fail(e)
        _print_report(report)
        console.print(f"wrote {out}/results.json, results.csv, report.html")
    world.close()


def _earlier_results(out: Path, *, resume: bool, distributed: bool, quiet: bool) -> RobustnessReport | None:
    """With --resume, the (partial) report an earlier run of the same command left in OUT, else None."""
    from bastion.eval import RobustnessReport

    if not resume:
        return None
    if distributed:
        raise BastionError("--resume works in one process, not under torchrun")
    path = out / "results.json"
    if not path.exists():
        if not quiet:
            console.print(f"note: no results.json in {out}: nothing to resume, evaluating from the start")
        return None
    try:
        earlier = RobustnessReport.from_json(path.read_text())
    except (ValueError, KeyError, TypeError) as e:
        raise BastionError(f"{path} cannot be resumed: it is not a bastion results file ({e})") from None
    if not quiet:
        console.print(f"resuming from {path} ({'partial' if earlier.partial else 'complete'}: {len(earlier.rows)} "
                      "rows done)")
    return earlier


def _split_presets(names: Sequence[str] | None) -> tuple[str | None, str | None]:
    """evaluate's --preset values (repeated or comma-separated): the model's preprocessing preset and the
    evaluation's (autoattack), each at most once."""
    from bastion.models import PRESETS

    given = [part.strip() for value in names or [] for part in value.split(",") if part.strip()]
    for name in given:
        if name not in PRESETS and name != "autoattack":
            raise BastionError(f"--preset must be one of {', '.join([*sorted(PRESETS), 'autoattack'])}, got {name!r}")
    model_presets = [name for name in given if name in PRESETS]
    suite_presets = [name for name in given if name == "autoattack"]
    if len(model_presets) > 1 or len(suite_presets) > 1:
        raise BastionError("--preset takes at most one preprocessing preset (imagenet) and one evaluation preset "
                           f"(autoattack), got {', '.join(model_presets + suite_presets)}")
    return (model_presets[0] if model_presets else None), (suite_presets[0] if suite_presets else None)


def _autoattack(net: nn.Module, ds: LabelledImages, *, attacks: str | None, eps: str, steps: int | None,
                restarts: int | None, adaptive: str, eot_n: int, cascade: bool, batch_size: int | None, seed: int,
                device: str) -> Evaluation:
    """The evaluation of ``--preset autoattack``: AutoAttack, its rand version when the model is randomized."""
    import torch

    from bastion._model import PROBE_SAMPLES, is_randomized
    from bastion.eval import Evaluation
    from bastion.factory import parse_eps

    if attacks is not None:
        raise BastionError("--preset autoattack runs its own attacks: leave out --attacks")
    if not cascade:
        raise BastionError("--preset autoattack is a cascade: leave out --no-cascade")
    with torch.no_grad():
        randomized = is_randomized(net, ds.batch(slice(0, PROBE_SAMPLES)).to(device))
    return Evaluation.autoattack(parse_eps(eps), version="rand" if randomized else "standard", model=net,
                                 adaptive=_adaptive_models(net, adaptive, eot_n) or None, steps=steps or 100,
                                 restarts=restarts or 1, eot_draws=eot_n, batch_size=batch_size, seed=seed)


def _check_linf_eps(suite: Sequence[Attack], grid: Sequence[float | None]) -> None:
    """Linf radii above 1 on [0, 1] pixels are the whole range again (rows at 1, 1.5 and 2 would be copies)."""
    big = [e for e in grid if e is not None and e > 1]
    if big and any(a.threat.norm == "linf" for a in suite):
        raise BastionError(f"Linf eps above 1 is the whole [0, 1] pixel range, got {big[0]}; use eps in [0, 1]")


def _warn_training_overlap(net: nn.Module, data: str, split: str) -> None:
    """Warn when the evaluation images may include the model's own training images (a model trained on
    mnist-5k:train, evaluated on mnist-5k:all, the default split)."""
    from bastion._wrap import innermost
    from bastion.data.base import parse_split

    training = getattr(getattr(innermost(net), "meta", None), "training", None) or {}
    trained_data, trained_split = training.get("data"), training.get("split")
    if trained_data != data or not isinstance(trained_split, str):
        return
    tb, eb = parse_split(trained_split)[0], parse_split(split)[0]
    if tb == eb or "all" in (tb, eb):
        console.print(f"[bold yellow]warning:[/] the model was trained on {escape(trained_data)}:"
                      f"{escape(trained_split)}; evaluating on {escape(data)}:{escape(split)} can include its own "
                      "training images (use a held-out split, e.g. --split test)")


def _adaptive_models(net: nn.Module, adaptive: str, eot_n: int) -> dict[str, nn.Module]:
    from bastion.attacks import bpda, eot
    from bastion.defenses import Defended

    if adaptive == "none" or not isinstance(net, Defended):
        if adaptive not in ("auto", "none"):
            raise BastionError(f"--adaptive {adaptive} needs an input-transformation defense (--defense bart or a "
                               "BaRT model); hide-probs changes the outputs, where transfer attacks apply")
        return {}
    if adaptive in ("auto", "eot-bpda"):
        return {f"eot{eot_n}(bpda)": eot(bpda(net), n=eot_n)}
    if adaptive == "eot":
        return {f"eot{eot_n}": eot(net, n=eot_n)}
    if adaptive == "bpda":
        return {"bpda": bpda(net)}
    raise BastionError(f"--adaptive must be auto, eot-bpda, eot, bpda or none; got {adaptive!r}")


def _print_report(report: RobustnessReport) -> None:
    from rich.table import Table

    for h in report.headline or []:
        first = ", ".join(f"{a} {h['broken_by'].get(a, 0)}" for a in h["attacks"])
        results.print(f"[bold]{h['name']}: robust accuracy {h['accuracy']:.1%}[/] at eps={h['eps']:g} (clean "
                      f"{h['clean_accuracy']:.1%}); images broken first by {first}", soft_wrap=True)

    t = Table(title=f"clean accuracy {report.clean_accuracy:.1%}")
    for c in ("attack", "mode", "eps", "accuracy", "attacked", "success", "L2", "Linf", "s"):
        t.add_column(c, justify="right")
    for r in report.rows:
        t.add_row(r.attack, r.mode, "-" if r.eps is None else f"{r.eps:g}", f"{r.accuracy:.1%}", str(r.attacked),
                  "-" if r.success_rate is None else f"{r.success_rate:.1%}",
                  "-" if r.l2_mean is None else f"{r.l2_mean:.2f}", "-" if r.linf_mean is None else f"{r.linf_mean:.3f}",
                  f"{r.seconds:.1f}")
    results.print(t)
    if report.cascade:
        console.print("cascade: each row's accuracy is the worst case over it and the earlier attacks of its "
                      "threat model; 'attacked' counts the images still standing when it started, 'success' is "
                      "over those")
    for f in report.flags:
        results.print(f"[bold red]flag[/] {f.code}: {f.title}")


@app.command()
def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("bastion-report"),
    overwrite: Overwrite = False,
    resume: Annotated[bool, typer.Option(
        help="Finish an interrupted demo in OUT (run the same command again with --resume): only its missing "
             "sections run, and the numbers equal an uninterrupted run's.")] = False,
    n: Annotated[int, typer.Option(min=10, help="Held-out images to evaluate.")] = 200,
    seed: Seed = 0,
    device: Device = "cpu",
    quiet: Quiet = False,
    threads: Threads = None,
) -> None:
    """The whole story on the embedded data and shipped models; writes OUT/report.html and results.json."""
    from bastion.demo import DEMO_OUTPUTS, SECTION_WEIGHTS, demo_setting, partial_demo, run_demo

    with _one_line_errors():
        check_device(device)
        if resume and overwrite:
            raise BastionError("--resume finishes the demo in --out and --overwrite starts it over: pass one of them")
        # a refused --out is said before anything else
        OutputFolder(out, DEMO_OUTPUTS, overwrite=overwrite or resume).check()
        if resume and not quiet:
            earlier = partial_demo(out, demo_setting(n=n, seed=seed, device=device))
            console.print(f"note: no interrupted demo in {out}: nothing to resume, running from the start"
                          if earlier is None else f"resuming the demo in {out}: {len(earlier['sections'])} of "
                          f"{len(SECTION_WEIGHTS)} sections done ({', '.join(earlier['sections'])})")
        _use_threads(threads, quiet=quiet)
        try:
            with progress_bar(enabled=not quiet) as bar:
                result = run_demo(out, n=n, seed=seed, device=device, progress=bar, command=_command_line(ctx),
                                  overwrite=overwrite, resume=resume)
        except KeyboardInterrupt:
            _interrupted(out, "sections", "demo")
    console.print(f"wrote {result['report']} ({result['seconds']:.0f}s)")


@app.command()
@_gathered(OwnModel)
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    device: Device = "cpu",
    model: Annotated[str | None, typer.Option(
        help="Serve this model instead of the shipped ones (with --gallery): " + _MODEL_HELP)] = None,
    own: OwnModel = OwnModel(),
    gallery: Annotated[str | None, typer.Option(
        help="With --model: the images to show, folder:PATH (one subfolder per class) or images:PATH with --labels.")] = None,
    labels: LabelsOption = None,
    gallery_size: Annotated[int, typer.Option(min=1, max=200, help="Gallery images shown (spread over the classes).")] = 30,
) -> None:
    """Start the local web demo (pick an image, an attack and eps; watch the prediction flip)."""
    from bastion.web.server import serve as run_server

    with _one_line_errors():
        check_device(device)
        ctx = _own_demo(model, weights=own.weights, own=own.preprocessing(), gallery=gallery, labels=labels,
                        gallery_size=gallery_size, device=device)
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/] binding to {host}: the demo has no authentication")
    run_server(host=host, port=port, device=device, ctx=ctx)


def _own_demo(model: str | None, *, weights: Path | None, own: Preprocessing | None, gallery: str | None,
              labels: Path | None, gallery_size: int, device: str) -> DemoContext | None:
    """The demo of your model on your images (None: the shipped demo)."""
    from bastion.data import is_image_source
    from bastion.models import resolve_model
    from bastion.models.user import preprocessing_of
    from bastion.web.context import own_model_context

    if model is None:
        if gallery is not None or weights is not None or own is not None:
            raise BastionError("--gallery, --weights and the preprocessing options go with --model (your model)")
        return None
    if gallery is None or not is_image_source(gallery):
        raise BastionError("--model needs --gallery folder:PATH (or images:PATH --labels FILE): the images to show")
    net = resolve_model(model, device=device, weights=weights, preprocessing=own)
    net, data = _open_data(gallery, "all", None, labels, net, device)
    transform = preprocessing_of(net).transform()
    if transform.crop is None:  # uploads must come out at the gallery's size
        _, h, w = data.input_shape
        transform = replace(transform, resize=min(h, w), crop=(h, w))
    return own_model_context(net, label=model, description=f"your model: {model}", gallery=data,
                             transform=transform, device=device, gallery_size=gallery_size)


@app.command(name="models")
def list_models() -> None:
    """List the shipped models, their recorded accuracy and the command that trained each."""
    from bastion.models import PRETRAINED, read_meta, weights_path

    for name, entry in PRETRAINED.items():
        p = weights_path(name)
        if not p.exists():
            results.print(f"[bold]{name}[/]: {entry.description} [dim](not shipped in this version)[/]", soft_wrap=True)
            continue
        m = read_meta(p)
        results.print(f"[bold]{name}[/]: {entry.description}; {m.metrics.get('val_split')}: {m.metrics.get('val_acc')}",
                      soft_wrap=True)
        if command := (m.training or {}).get("command"):
            results.print(f"  trained with: {command}", soft_wrap=True, highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
