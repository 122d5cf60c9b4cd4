"""A run's settings: the recipe methods, the presets, `Settings`.

`Settings` has one field per recipe flag (the same names).
`keras_rts.experiment.validation.validate` checks them before any work,
deriving what it can from the objects a run is built from
(`build.method_plan` constructs the callbacks, which check their own
arguments); every error names its flag.
"""

import dataclasses
import os
from typing import Optional, Tuple

from keras_rts import data as data_lib
from keras_rts import files, methods
from keras_rts import models as models_lib
from keras_rts import schedules


@dataclasses.dataclass(frozen=True)
class RecipeMethod:
    """A recipe method: an `RTSModel` step and the RTS controls it adds.

    Attributes:
        name: the `--method` value.
        step: the `RTSModel` method, or `None` for the controlled methods,
            whose step is `--base-method` (default `pugd`).
        controls: the RTS controls: `"r"` (ρ scheduled), `"t"` (timing),
            `"s"` (λ scheduled), or several.
        radius: the default ρ in units of the step's own default ρ
            (`keras_rts.methods.Method.default_radius`): one value, or
            first and last for `r`.
        grad_scale: the default λ (first and last for `s`), or `None`
            for the step's own λ.
        base_method: the controlled methods' step without `--base-method`.
        start_fraction: the fixed timing's start, as a fraction of the
            epochs, without `--start-fraction` or `--start-epoch`.
    """

    name: str
    step: Optional[str]
    controls: str
    radius: Tuple[float, ...] = (1.0,)
    grad_scale: Optional[Tuple[float, ...]] = None
    base_method: str = "pugd"
    start_fraction: float = 0.5
    perturb_every: int = 1
    perturb_probability: Optional[float] = None

    def takes(self, control):
        return control in self.controls


METHODS = {m.name: m for m in (
    RecipeMethod("sgd", "sgd", ""),
    RecipeMethod("ugd", "ugd", ""),
    RecipeMethod("sam", "sam", ""),
    RecipeMethod("asam", "asam", ""),
    RecipeMethod("pugd", "pugd", ""),
    RecipeMethod("gsam", "gsam", ""),
    RecipeMethod("wsam", "wsam", ""),
    RecipeMethod("fsam", "fsam", ""),
    RecipeMethod("looksam", "looksam", ""),
    RecipeMethod("msam", "msam", "", radius=(1 / 0.3,)),
    RecipeMethod("sam_interval", "sam", "", perturb_every=5),
    RecipeMethod("sam_random", "sam", "", perturb_probability=0.2),
    RecipeMethod("sam_vit", "sam", "", radius=(4.0,)),
    RecipeMethod("r", None, "r", radius=(1.0, 0.1)),
    RecipeMethod("t", None, "t"),
    RecipeMethod("s", None, "s", grad_scale=(1.0, 0.5)),
    RecipeMethod("rts", None, "rts", radius=(3.0, 0.1),
                 grad_scale=(1.0, 0.5)),
    RecipeMethod("rts_searched", None, "ts", radius=(3.972,),
                 grad_scale=(0.03374, 0.4884), base_method="sam",
                 start_fraction=0.813),
)}
"""The recipes' methods: the steps of docs/method.md, and the R, T, S and RTS
controls over a base step. Default ρ (in units of the step's own: SAM's
CIFAR value 0.05 (Foret et al.), ASAM's 0.5 (Kwon et al.), PUGD's 1): `r` a
cosine from 1 down to 0.1, `rts` the cosine from 3 to 0.1, which has come
down to 1.55 when `rts` switches to PUGD halfway (`r` perturbs from the
first epoch, and from 3 it trained 4 points below PUGD on CIFAR-10; from 1
it trains above, docs/results/README.md). Default λ for `s` and `rts`: from
PUGD's 1 down to 0.5 over the run, as `keras_rts.callbacks.rts`.

`sam_interval` (SAM's step on every 5th step of the run, plain SGD steps
between, as Composer's SAM `interval`, ρ unchanged: Composer's docs give
no scaling) and `sam_random` (SAM's step on each step with probability
0.2, drawn from the run's seed) are SAM at 1.2× SGD's gradient evaluations,
the cheap arms beside `looksam` (k = 5) and `rts_searched`.

`msam` is Momentum-SAM at ρ = 1 (1/0.3 of its class default 0.3), chosen
on held-out CIFAR-10 training images under 40 % label noise among 3, 1
and 0.3 (docs/tuning.md): the authors' 3 does not train this small ResNet.

`sam_vit` is SAM with ρ = 0.2 (4 × its CIFAR 0.05), the radius Chen et al.
(ICLR 2022) train ViT-B/16 with (ViTs take a larger ρ than ResNets).

`rts_searched` is the KerasTuner search's choice on held-out CIFAR-10
training images (docs/tuning.md; trial 29, the best mean of the three best
trials re-run with two new seeds): SAM's step from 0.813 of the run, ρ
constant at 3.972 × SAM's 0.05, λ linear from 0.03374 to 0.4884 — 1.2×
SGD's gradient evaluations. It is a row of its own, not `rts`'s defaults:
why is in `keras_rts.callbacks.rts` (the evidence: docs/guide.md). Every
committed run's settings.json spells out the values it ran with, so a
later change of these defaults leaves documented runs as they were."""


BASE_METHODS = ("pugd", "sam", "asam", "gsam", "wsam", "fsam", "looksam",
                "msam")
"""The steps the controls can drive (`--base-method`)."""


TIMINGS = ("fixed", "lr", "variance", "gap")


STRATEGIES = ("none", "mirrored", "multiworker")


OPTIMIZERS = ("sgd", "adamw")
"""The recipes' optimizers; `None` in the settings is SGD."""

OPTIMIZER_DEFAULTS = {"adamw": dict(lr=1e-3, weight_decay=0.05,
                                    warmup_epochs=5)}
"""What `--optimizer adamw` changes of the other flags' defaults (an
explicit flag still wins): AdamW's usual learning rate, its decoupled
weight decay as ViT recipes use it (DeiT: 0.05), and a warm-up."""

PRESETS = {
    "paper": dict(model="resnet18", epochs=200, batch_size=128, lr=0.1,
                  train_examples=None),
    "cpu": dict(model="small_resnet", epochs=10, batch_size=128, lr=0.1,
                train_examples=5000),
}
"""`paper`: the published CIFAR setup. `cpu`: minutes on 2 CPU cores."""


def _by_method(attribute):
    """`0.5; rts_searched 0.813`: a `RecipeMethod` attribute's default, and
    the methods that set their own (for the flags' help)."""
    default = RecipeMethod.__dataclass_fields__[attribute].default
    own = [f"{m.name} {getattr(m, attribute)}" for m in METHODS.values()
           if getattr(m, attribute) != default]
    return "; ".join([str(default)] + own)


def _field(default, help, **kwargs):
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


@dataclasses.dataclass
class Settings:
    """Everything that defines a run; each field is a recipe flag."""

    dataset: str = _field("cifar10", "dataset", choices=data_lib.DATASETS)
    method: str = _field("pugd", "training method", choices=tuple(METHODS))
    base_method: Optional[str] = _field(
        None, "the step that r, t, s, rts and rts_searched control "
        f"(default: {_by_method('base_method')})",
        choices=BASE_METHODS)
    model: str = _field("resnet18", "network", choices=models_lib.MODELS)
    epochs: int = _field(200, "epochs of the run")
    batch_size: int = _field(128, "examples per batch")
    optimizer: Optional[str] = _field(
        None, "sgd (with momentum) or adamw, which sets --lr 0.001, "
        "--weight-decay 0.05 (AdamW's own, decoupled) and --warmup-epochs "
        "5 unless given (default: sgd)", choices=OPTIMIZERS)
    lr: float = _field(0.1, "peak learning rate (cosine decay to 0)")
    warmup_epochs: Optional[int] = _field(
        None, "epochs of linear learning-rate warm-up from 0 before the "
        "cosine decay (default: none; 5 with --optimizer adamw)")
    momentum: float = _field(0.9, "SGD momentum")
    weight_decay: float = _field(
        5e-4, "L2 weight decay: SGD's coupled (added to the direction, as "
        "in the published recipes), AdamW's decoupled")
    seed: int = _field(0, "seed of initialisation, order and augmentation")
    train_examples: Optional[int] = _field(
        None, "train on this many training images (a subset)")
    test_examples: Optional[int] = _field(
        None, "test on the first this many test images (default: all)")
    validation_examples: int = _field(
        0, "hold out this many training images and evaluate on them "
        "instead of the test set (as the tuner does)")
    data_dir: Optional[str] = _field(
        None, "prepared TFDS folder (CIFAR; default TFDS_DATA_DIR) or the "
        "Tiny ImageNet folder")
    image_size: Optional[int] = _field(
        None, "tiny_imagenet: resize the 64×64 images to this side (area "
        "averaging), e.g. 32; default the originals")
    cutout: int = _field(0, "side of the cutout square (0: none)")
    label_noise: float = _field(
        0.0, "replace this fraction of the training labels by another "
        "class, drawn uniformly (symmetric noise, fixed by the seed; test "
        "and validation labels stay clean)")
    radius: Optional[Tuple[float, ...]] = _field(
        None, "ρ: one value, or first and last for methods r and rts "
        "(default by method: sam 0.05, asam 0.5, pugd 1, msam 1; t and s "
        "the base method's; r 1 0.1, rts 3 0.1 and rts_searched 3.972 times "
        "the base method's)",
        nargs="+")
    radius_shape: str = _field("cosine", "shape of ρ for r and rts",
                               choices=schedules.SHAPES)
    grad_scale: Optional[Tuple[float, ...]] = _field(
        None, "λ: one value, or first and last for methods s and rts "
        "(default: the method's λ; s/rts 1 0.5, rts_searched 0.03374 "
        "0.4884)", nargs="+")
    grad_scale_shape: str = _field(
        "linear", "shape of λ for s, rts and rts_searched",
        choices=schedules.SHAPES)
    timing: str = _field(
        "fixed", "trigger of the perturbation for t, rts and rts_searched: "
        "a fixed start, the learning rate (lr), the gradient-norm variance, "
        "the generalization gap", choices=TIMINGS)
    lr_fraction: float = _field(
        0.5, "lr timing: perturb once the learning rate is at or below this "
        "fraction of its peak (under cosine decay, 0.5 is the second half)")
    perturb_every: int = _field(
        1, "take the method's step on every k-th step of the perturbing "
        "phase only, plain steps between (interval mode)")
    start_fraction: Optional[float] = _field(
        None, "fixed timing: start as a fraction of the epochs (default "
        f"without --start-epoch: {_by_method('start_fraction')})")
    start_epoch: Optional[int] = _field(None, "fixed timing: start epoch")
    end_epoch: Optional[int] = _field(None, "fixed timing: end epoch")
    variance_t0: int = _field(5, "variance timing: epoch of the threshold")
    variance_gamma: float = _field(0.5, "variance timing: threshold factor")
    variance_k: int = _field(100, "variance timing: steps compared")
    gap_xi: int = _field(5, "gap timing: epochs averaged for the base")
    gap_mu: float = _field(2.0, "gap timing: base factor")
    gap_t: int = _field(1, "gap timing: check every this many epochs")
    jit_compile: bool = _field(
        False, "compile the step with XLA (without it, Keras' 'auto': XLA "
        "under JAX and on TensorFlow with a GPU)")
    strategy: str = _field(
        "none", "tf.distribute strategy: mirrored uses every local GPU "
        "(batch-size is the global batch); multiworker reads TF_CONFIG",
        choices=STRATEGIES)
    perturbation: str = _field(
        "replica", "with several replicas: ε from each replica's gradient "
        "(replica) or from the all-reduced one (global)",
        choices=("replica", "global"))
    alpha: Optional[float] = _field(
        None, "the weight α of gsam's orthogonal part (its own: 0.4) or of "
        "looksam's stored g_v (its own: 0.7)")
    gamma: Optional[float] = _field(
        None, "wsam: weight γ of the sharpness, in (0, 1) (default 0.9)")
    sigma: Optional[float] = _field(
        None, "fsam: σ, how much of the gradient average ε leaves out "
        "(default 1)")
    decay: Optional[float] = _field(
        None, "fsam: decay of the gradient average, in [0, 1) (default 0.9)")
    every: Optional[int] = _field(
        None, "looksam: k, the two-pass step on every k-th step (default 5)")
    decouple: Optional[bool] = _field(
        None, "wsam: true applies the sharpness term apart from the "
        "optimizer, false through it (default true)")
    perturb_probability: Optional[float] = _field(
        None, "random switching: the method's step on each step of the "
        "perturbing phase with this probability, drawn from --seed "
        "(fixed and lr timings, or the whole run)")
    exclude_from_perturbation: Optional[Tuple[str, ...]] = _field(
        None, "variables ε leaves out: names or parts of their paths "
        "(e.g. bias gamma beta)", nargs="+")
    sub_batch_size: Optional[int] = _field(
        None, "m: form ε per sub-batch of m examples of each replica's "
        "batch and average (m-sharpness); default one ε per batch")

    def __post_init__(self):
        if self.optimizer == "sgd":  # the default, spelt out
            self.optimizer = None

    @property
    def recipe_method(self):
        return METHODS[self.method]

    @property
    def step(self):
        """The `RTSModel` method of the run (for the controlled methods,
        the base method)."""
        m = self.recipe_method
        return m.step or self.base_method or m.base_method

    def method_radius(self):
        if self.radius:
            return tuple(self.radius)
        unit = methods.METHODS[self.step].default_radius
        return tuple(unit * r for r in self.recipe_method.radius)

    def method_grad_scale(self):
        if self.grad_scale:
            return tuple(self.grad_scale)
        return self.recipe_method.grad_scale or (None,)  # the step's own λ

    def method_start_fraction(self):
        """The fixed timing's start: as given, else the method's unless a
        start epoch is given."""
        if self.start_fraction is None and self.start_epoch is None:
            return self.recipe_method.start_fraction
        return self.start_fraction

    def resolved(self):
        """These settings with the method's defaults filled in.

        Returns:
            A copy whose `radius` (and, for `s`/`rts`, `grad_scale`, for
            the controlled methods `base_method`, and for a fixed timing
            its start) are the values the run uses, so that a saved run
            does not change meaning when a default does. λ stays `None`
            for the other methods: their λ is the method's own (docs/method.md).
        """
        grad_scale = self.method_grad_scale()
        fixed = self.recipe_method.takes("t") and self.timing == "fixed"
        within = dict(perturb_every=self.perturb_every,
                      perturb_probability=self.perturb_probability)
        if within == dict(perturb_every=1, perturb_probability=None):
            within = dict(  # none given: the method's own
                perturb_every=self.recipe_method.perturb_every,
                perturb_probability=self.recipe_method.perturb_probability)
        return dataclasses.replace(
            self, radius=self.method_radius(), **within,
            grad_scale=None if grad_scale == (None,) else grad_scale,
            base_method=None if self.recipe_method.step else self.step,
            start_fraction=(self.method_start_fraction() if fixed
                            else self.start_fraction))


LOCATION_FIELDS = ("data_dir",)
"""Where a run reads its data from: not part of what the run computes."""


def load_settings(folder):
    """The `Settings` of the run in `folder`, from its `settings.json`.

    Fields newer than the run take their defaults. Runs saved before ρ and
    λ were spelt out hold `None` there, which `Settings.resolved` reads as
    today's defaults.
    """
    path = os.path.join(folder, "settings.json")
    remedy = ("restore it, or start the run again in a new folder (nothing "
              "was changed)")
    saved = files.read_json(path, remedy)
    unknown = sorted(set(saved) - set(Settings.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{path} holds settings this version does not know "
                         f"({', '.join(unknown)}): {remedy}")
    return Settings(**{k: tuple(v) if isinstance(v, list) else v
                       for k, v in saved.items()})

