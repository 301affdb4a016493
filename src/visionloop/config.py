"""The one typed configuration, read from params.yaml.

Every stage gets the `Config` object passed in; nothing reads params.yaml on its own.
Relative paths in the file are resolved against the folder the file is in, so the
same params work whichever folder a command is started from.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from visionloop.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


def _resolve_against_root(value: Path, info: ValidationInfo) -> Path:
    root = (info.context or {}).get("root")
    if root is None or value.is_absolute():
        return value
    return Path(root) / value


ProjectPath = Annotated[Path, AfterValidator(_resolve_against_root)]


class Section(BaseModel):
    """Base of every section: immutable, and a misspelt key is an error, not a silent default."""

    # validate_default: a path left out of params.yaml is still resolved against its folder.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DemoConfig(Section):
    image_size: int = Field(32, ge=8, le=1024)
    drop_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    seed: int = 0


class ArchiveLimits(Section):
    """Limits a drop must stay within (archives and folders alike), else it is rejected whole."""

    max_members: int = Field(200_000, ge=1)  # files and folders in one drop
    max_bytes: int = Field(20_000_000_000, ge=1)  # total uncompressed bytes of one drop
    max_ratio: float = Field(100.0, gt=1)  # uncompressed/compressed size beyond this is a bomb
    ratio_min_bytes: int = Field(1_000_000, ge=0)  # the ratio is judged only above this size


class IngestConfig(Section):
    done_dir: ProjectPath = Path("data/incoming/.done")  # ingested drops are moved here
    work_dir: ProjectPath = Path("data/.ingest")  # staging; same filesystem as raw_dir
    report_dir: ProjectPath = Path("reports/ingest")  # one JSON per drop: every file's fate
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP")  # Pillow format names accepted
    min_side: int = Field(8, ge=1)  # pixels; smaller images are quarantined (too_small)
    max_side: int = Field(12_000, ge=1)  # pixels; larger ones are quarantined (too_large)
    max_pixels: int = Field(50_000_000, ge=1)  # width x height cap (decompression bombs)
    max_file_bytes: int = Field(200_000_000, ge=1)  # one file larger than this: file_too_large
    allow_new_classes: bool = False  # else a drop bringing a class not in the map is held
    # With a champion, each drop's labels are checked against what it predicts (cleanlab)
    # and for near-duplicates with two labels: off, warn (in the report) or hold the drop.
    label_issues: Literal["off", "warn", "hold"] = "warn"
    label_pattern: str = r"^\w(?:[\w.+ -]{0,98}[\w+-])?$"  # safe class-folder names
    workers: int = Field(0, ge=0)  # decoding threads; 0 = one per CPU core (at most 8)
    limits: ArchiveLimits = ArchiveLimits()

    @field_validator("label_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("formats")
    @classmethod
    def _upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(f.upper() for f in value)


class DvcConfig(Section):
    # ingest runs `dvc add data.raw_dir` (a few files: one shard per drop) so `dvc status`
    # stays clean
    track: bool = True
    remote_name: str = "local"
    # The default remote: a plain folder outside the workspace. null leaves remotes alone.
    remote_url: str | None = "../visionloop-dvc-remote"
    # Another DVC process (a `dvc repro`, a `dvc push`) holds the repo's lock: wait this
    # long (s) for it, retrying, before ingest reports that `dvc add` is still to be done.
    lock_wait_seconds: float = Field(120, ge=0)


ExpectationName = Literal[
    "columns",
    "not_empty",
    "sha256_format",
    "sha256_unique",
    "labels_in_class_map",
    "no_label_conflicts",
    "files_present",
    "width_in_bounds",
    "height_in_bounds",
    "allowed_modes",
    "min_per_class",
    "max_imbalance",
]


class ValidationConfig(Section):
    report_dir: ProjectPath = Path("reports/validation")  # results JSON + Data Docs HTML
    # Source modes (manifest `mode`) that visionloop.images knows how to normalise.
    allowed_modes: tuple[str, ...] = (
        *("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr"),
        *("I", "I;16", "I;16B", "I;16L", "F"),
    )
    min_per_class: int = Field(5, ge=0)  # images per class in the class map
    max_imbalance: float = Field(10.0, ge=1)  # largest class / each class
    # These stop the pipeline when they fail; every other expectation only warns.
    blocking: tuple[ExpectationName, ...] = (
        "columns",
        "not_empty",
        "sha256_format",
        "sha256_unique",
        "labels_in_class_map",
        "no_label_conflicts",
        "files_present",
        "width_in_bounds",
        "height_in_bounds",
        "allowed_modes",
    )


class DataConfig(Section):
    incoming_dir: ProjectPath = Path("data/incoming")
    raw_dir: ProjectPath = Path("data/raw")
    quarantine_dir: ProjectPath = Path("data/quarantine")
    demo: DemoConfig = DemoConfig()
    ingest: IngestConfig = IngestConfig()
    dvc: DvcConfig = DvcConfig()
    validation: ValidationConfig = ValidationConfig()


class SplitFractions(Section):
    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.15, ge=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class SplitConfig(Section):
    dir: ProjectPath = Path("data/splits")
    fractions: SplitFractions = SplitFractions()
    # Orders groups before they are placed; changing it (or any key here) starts a new split.
    seed: int = 0
    # frozen: once a class has test images, later drops never add to test; grow: they do.
    test_policy: Literal["frozen", "grow"] = "frozen"
    # Images whose 64-bit perceptual hashes differ in at most this many bits are one group.
    near_duplicate_distance: int = Field(4, ge=0, le=16)


# A tunable that the recipe chooser (visionloop.training.recipe) fills in from the data when
# it is left at "auto"; any value set in params.yaml wins.
Auto = Literal["auto"]
ImageSide = Annotated[int, Field(ge=8, le=1024)]


class PrepareConfig(Section):
    dir: ProjectPath = Path("data/prepared")
    # Side of the square uint8 tensors, px; auto: from the images' sizes and count.
    image_size: ImageSide | Auto = "auto"
    # crop: shorter side to image_size, centre crop; pad: longer side, pad with white;
    # stretch: both sides to image_size (changes the aspect ratio).
    resize: Literal["crop", "pad", "stretch"] = "crop"
    # Decoded, resized images keyed by content; outside DVC's outs so reruns reuse it.
    cache_dir: ProjectPath = Path("data/cache/prepare")
    # Decoding processes (small images are Python work under the GIL, so threads would not
    # use a second core); 0 = one per CPU core, at most 8. Does not change the tensors.
    workers: int = Field(0, ge=0)


class AugmentConfig(Section):
    # random resized crop: area kept, low..high; auto: gentle for glyphs, wide for photos
    crop_scale: tuple[float, float] | Auto = "auto"
    crop_ratio: tuple[float, float] | Auto = "auto"  # and its aspect ratio range
    hflip: bool | Auto = "auto"  # only for classes that look the same mirrored (not digits)
    # photometric (and for the last two, geometric) policy; auto: none (crops and flips only)
    policy: Literal["auto", "none", "colorjitter", "trivialaugment", "randaugment"] = "auto"
    mixup_alpha: float = Field(0.0, ge=0)  # 0 turns mixup off
    cutmix_alpha: float = Field(0.0, ge=0)  # 0 turns cutmix off


class EarlyStoppingConfig(Section):
    monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    mode: Literal["max", "min"] = "max"
    patience: Annotated[int, Field(ge=1)] | Auto = "auto"  # epochs without improvement
    min_delta: float = Field(0.0, ge=0)  # smaller changes do not count as improvement

    @model_validator(mode="after")
    def _mode_fits_the_metric(self) -> EarlyStoppingConfig:
        wanted = "min" if self.monitor.endswith("loss") else "max"
        if self.mode != wanted:
            raise ValueError(f"{self.monitor} improves when it goes {wanted}; set mode: {wanted}")
        return self


class TrainConfig(Section):
    dir: ProjectPath = Path("models/candidate")
    # Outside the DVC output on purpose: DVC deletes outputs before it reruns a stage.
    checkpoint_dir: ProjectPath = Path("models/checkpoints")
    seed: int = 0
    model: str = "auto"  # a name in visionloop.models.zoo.ZOO; auto: from the data
    # torchvision: the architecture's ImageNet weights from torch hub's cache (TORCH_HOME);
    # or a local state_dict / checkpoint file; null: random initialisation.
    pretrained: Literal["torchvision"] | ProjectPath | None = None
    allow_download: bool = False  # pretrained: torchvision may download a missing file
    freeze: str = "none"  # none | all (all but the head) | a layer name (freeze what precedes)
    unfreeze_after: int = Field(0, ge=0)  # epochs frozen, then all layers train; 0 = never
    # Learning rate of everything but the head, as a fraction of lr; auto: 0.1 when
    # fine-tuning pretrained weights, else 1.
    backbone_lr_scale: Annotated[float, Field(gt=0, le=1)] | Auto = "auto"
    epochs: Annotated[int, Field(ge=1)] | Auto = "auto"  # at most; auto: from optimiser steps
    # per process; auto: 32 for small sets (more steps per epoch), else 64
    batch_size: Annotated[int, Field(ge=1)] | Auto = "auto"
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "step", "onecycle", "constant"] = "cosine"
    warmup_epochs: float = Field(1.0, ge=0)  # linear warm-up (cosine and step)
    step_epochs: int = Field(10, ge=1)  # step schedule: multiply lr by step_gamma every so often
    step_gamma: float = Field(0.1, gt=0, le=1)
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] | Auto = "auto"
    # Exponential moving average of the weights, per optimiser step; 0 = off.
    ema_decay: Annotated[float, Field(ge=0, lt=1)] | Auto = "auto"
    # none | weighted_loss (class weights inverse to train counts) | balanced_sampler
    # (every class drawn equally often); auto: from the train split's imbalance ratio.
    class_balance: Literal["auto", "none", "weighted_loss", "balanced_sampler"] = "auto"
    # Test-time augmentation recorded in the bundle, so evaluation, the gate, predict and
    # serve all do the same: flip averages an image's and its mirror's probabilities.
    tta: Literal["auto", "none", "flip"] = "auto"
    grad_clip: float = Field(0.0, ge=0)  # max gradient norm; 0 turns clipping off
    augment: AugmentConfig = AugmentConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 on CUDA, off on CPU
    channels_last: bool = True
    compile: bool = False  # torch.compile: pays off on long GPU runs only
    log_model: bool = True  # also log an mlflow.pytorch model (signature + input example)
    progress: Literal["auto", "bar", "lines", "off"] = "auto"  # auto: bar on a TTY, else lines


class EvaluateConfig(Section):
    dir: ProjectPath = Path("reports/evaluate")
    batch_size: int = Field(256, ge=1)  # images per forward pass
    calibration_bins: int = Field(15, ge=2, le=100)  # equal-width confidence bins for ECE
    top_confused_pairs: int = Field(10, ge=0)  # most-confused (true, predicted) pairs reported


class GateConfig(Section):
    dir: ProjectPath = Path("reports/gate")
    # Absolute floors, opt-in (null: not applied); when set they apply to every candidate.
    # What is good enough depends on the dataset, so none is assumed.
    min_top1: Annotated[float, Field(ge=0, le=1)] | None = None
    min_class_recall: Annotated[float, Field(ge=0, le=1)] | None = None
    # No champion yet: the candidate must beat each of these on the same test images,
    # significantly (one-sided exact McNemar at alpha). majority: always the largest train
    # class; logistic: logistic regression on 16x16 pixels (visionloop.promotion.baselines).
    first_model_baselines: tuple[Literal["majority", "logistic"], ...] = ("majority", "logistic")
    # Candidate top-1 minus champion top-1 must be at least this: negative is a tolerance,
    # positive a required gain (which must then also be significant).
    min_gain: float = Field(0.0, ge=-1, le=1)
    max_class_recall_drop: float = Field(0.10, ge=0, le=1)  # per-class regression limit
    significance: Literal["mcnemar", "bootstrap", "both"] = "both"  # paired tests used
    alpha: float = Field(0.05, gt=0, lt=0.5)
    bootstrap_samples: int = Field(2000, ge=100)
    seed: int = 0  # bootstrap RNG seed: the same inputs give the same verdict
    # The champion was trained on another class map, so it cannot be compared: "reject" the
    # candidate, judge it as a "first_model" (baselines and floors), or on the floors alone
    # ("floors_only", which needs a floor set); the verdict says which happened.
    on_class_map_change: Literal["reject", "first_model", "floors_only"] = "reject"

    @model_validator(mode="after")
    def _floors_only_needs_a_floor(self) -> GateConfig:
        if self.on_class_map_change == "floors_only" and not self.floors_set():
            raise ValueError(
                "on_class_map_change: floors_only needs min_top1 or min_class_recall set "
                "(or use first_model)"
            )
        return self

    def floors_set(self) -> bool:
        return self.min_top1 is not None or self.min_class_recall is not None


class RegistryConfig(Section):
    model_name: str = "visionloop-classifier"
    experiment: str = "visionloop"
    # A relative sqlite:/// path is relative to params.yaml's folder; MLFLOW_TRACKING_URI wins.
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_dir: ProjectPath = Path("mlruns/artifacts")
    dir: ProjectPath = Path("models/registry")  # audit.jsonl: every alias move
    # Registered versions downloaded once and reused, each checked against its bundle_sha256
    # tag on every use (promotion.version_cache); None: <dir>/cache.
    cache_dir: ProjectPath | None = None
    # Versions kept there, the most recently used: the champion, the one before it (rollback),
    # the candidate being promoted and one more (a version predicted with by hand).
    cache_versions: int = Field(4, ge=1)
    # dvc repro's gate stage also registers and promotes; off, those are CLI/flow actions.
    act_in_pipeline: bool = False
    # A tracking server's /health must answer within this (s) before any tracking or
    # registry step; a LAN server answers in milliseconds, so a dead one fails in seconds.
    health_timeout_seconds: float = Field(5, gt=0)
    # MLflow's own HTTP settings (MLFLOW_HTTP_REQUEST_MAX_RETRIES / _TIMEOUT; the environment
    # wins): its defaults (7 retries with backoff, 120 s) turn a server that stops answering
    # mid-command into minutes of silence.
    http_max_retries: int = Field(2, ge=0)
    http_timeout_seconds: int = Field(30, ge=1)

    @property
    def cache_folder(self) -> Path:
        return self.cache_dir or self.dir / "cache"


class FlowsConfig(Section):
    prefect_home: ProjectPath = Path(".prefect")
    retrain_cron: str = "0 3 * * *"  # nightly; standard 5-field cron
    timezone: str = "UTC"
    watch_interval_seconds: int = Field(30, ge=1)  # how often the drop watcher looks
    settle_seconds: float = Field(60, ge=0)  # a drop quiet this long (or marked READY) is whole
    lock_file: ProjectPath = Path(".visionloop/retrain.lock")
    stage_timeout_seconds: int = Field(6 * 3600, ge=1)
    server_port: int = Field(4200, ge=1024, le=65535)  # local `prefect server` of flows serve
    push_after_retrain: bool = True  # `dvc push` once a retraining is recorded
    notify_block: str = ""  # a Prefect notification block ("slack-webhook/ops"); "" = none
    monitor_cron: str = "0 * * * *"  # the monitor deployment: prediction-log drift, hourly


class StackConfig(Section):
    """`visionloop stack up`: PostgreSQL, MLflow and Prefect servers and a worker, on loopback."""

    dir: ProjectPath = Path(".visionloop/stack")  # data, secrets (mode 0600), logs, PID files
    postgres_port: int = Field(5433, ge=1024, le=65535)  # 5433: a system PostgreSQL keeps 5432
    mlflow_port: int = Field(5000, ge=1024, le=65535)
    prefect_port: int = Field(4210, ge=1024, le=65535)  # not 4200: `flows serve` can run beside
    # MLflow's artifact store, served through the tracking server: a folder (default
    # <dir>/artifacts) or an object-store URL (s3://bucket/prefix, gs://..., credentials from
    # the usual AWS_*/GOOGLE_* environment of `stack up`).
    artifacts: str | None = None
    # uvicorn processes of the MLflow server. One: with several, uvicorn leaves Nagle's
    # algorithm on (its shared socket, uvicorn#3149), so every request on a kept-alive
    # connection waits ~40 ms for a delayed ACK (measured: 55 against 19 ms a request).
    mlflow_workers: int = Field(1, ge=1, le=64)
    work_pool: str = "visionloop"  # the process work pool; prefect.yaml names the same one
    worker_poll_seconds: float = Field(5, gt=0)  # how often the worker asks for runs to start
    # A retrain queued behind the running one (one at a time) asks for the slot this often.
    queue_retry_seconds: float = Field(10, gt=0)
    startup_timeout_seconds: float = Field(180, gt=0)  # per server; migrations on a fresh DB


class ServingLimits(Section):
    """What one request may carry; beyond these the server answers 413/400 with a reason code."""

    # Whole request body (multipart, JSON or a raw image): a phone photo is 3-12 MB.
    max_request_bytes: int = Field(50_000_000, ge=1)
    max_images_per_request: int = Field(64, ge=1)
    # width x height cap per image (decompression bombs); 50 MP covers 48 MP phone cameras.
    max_pixels: int = Field(50_000_000, ge=1)
    # Requests handled at once; more get 503 (bounds memory: each holds up to one body).
    max_concurrency: int = Field(64, ge=1)


class ServingBatching(Section):
    """Micro-batching of concurrent requests into one forward pass."""

    max_batch: int = Field(64, ge=1)  # images per forward pass
    # Wait at most this long for more images, and only while other requests are on their
    # way (a lone request never waits): a few ms buys batching under load.
    max_wait_ms: float = Field(5.0, ge=0, le=1000)


class ServingExport(Section):
    """The ONNX fp32 and int8 models built at registration (serving.runtime onnx | int8)."""

    onnx: bool = True  # export at registration; off: only the torch runtime is available
    calibration_images: int = Field(256, ge=1)  # training-cache images for int8 calibration
    # fp32 ONNX counts as faithful when no probability differs from torch's by more.
    max_prob_diff: float = Field(1e-4, gt=0, le=1)
    # Test images the exports are checked on (evenly spaced); 0 = the whole test split.
    # Bounds registration time on a CPU with a large test set and a large network.
    max_check_images: int = Field(5000, ge=0)


class ServingConfig(Section):
    # A registry URI (models:/NAME@ALIAS, models:/NAME/VERSION) or a bundle folder;
    # "" = models:/<registry.model_name>@champion, followed as the alias moves.
    model: str = ""
    # auto: int8 when usable, else ONNX fp32 when faithful, else torch.
    runtime: Literal["auto", "torch", "onnx", "int8"] = "auto"
    host: str = "127.0.0.1"  # loopback: put a proxy in front to expose it
    port: int = Field(8000, ge=0, le=65535)  # 0: any free port (printed at start)
    top_k: int = Field(5, ge=1)  # labels with probabilities in every answer
    batch_size: int = Field(64, ge=1)  # visionloop predict: images per forward pass
    workers: int = Field(0, ge=0)  # decoding threads; 0 = one per CPU core (at most 8)
    poll_seconds: float = Field(30.0, gt=0)  # how often serve asks the registry for @champion
    # int8 is usable only when its top-1 on the test split is at most this far below
    # fp32's (a fraction: 0.005 = half a point).
    max_int8_drop: float = Field(0.005, ge=0, le=1)
    keep_images: bool = False  # also store each served image, by content, in image_store
    prediction_log: ProjectPath = Path("data/serving/predictions")  # one JSONL file per day
    image_store: ProjectPath = Path("data/serving/images")
    limits: ServingLimits = ServingLimits()
    batching: ServingBatching = ServingBatching()
    export: ServingExport = ServingExport()


class DriftConfig(Section):
    """Drift of new images against the champion's training images (monitoring.drift)."""

    enabled: bool = True  # check each new drop (with a champion) and the prediction log
    warn_p: float = Field(0.05, gt=0, lt=1)  # Bonferroni-corrected p below this: warn
    alert_p: float = Field(0.01, gt=0, lt=1)  # and below this: alert
    permutations: int = Field(500, ge=50)  # MMD permutation test; p-value resolution 1/N
    max_reference: int = Field(1000, ge=10)  # training images sampled as the reference
    max_images: int = Field(1000, ge=10)  # new images sampled (bounds the N^2 kernel)
    min_images: int = Field(20, ge=2)  # fewer new images: the test is skipped, with why
    seed: int = 0

    @model_validator(mode="after")
    def _alert_below_warn(self) -> DriftConfig:
        if self.alert_p > self.warn_p:
            raise ValueError("alert_p must not exceed warn_p")
        return self


class LabelIssuesConfig(Section):
    """Suspected mislabels in a new drop (cleanlab on the champion's probabilities)."""

    min_images: int = Field(20, ge=2)  # fewer images of known classes: skipped, with why
    # data.ingest.label_issues: hold holds a drop when more than this share of its images
    # is suspected (a good champion disagrees with a few correct labels on any drop), or
    # when any near-duplicate pair carries two labels.
    hold_share: float = Field(0.03, ge=0, le=1)
    listed: int = Field(200, ge=0)  # suspected mislabels listed in the report, worst first


class SelectConfig(Section):
    """`visionloop select`: which unlabelled images to label next."""

    uncertainty: Literal["margin", "entropy"] = "margin"  # margin: top-1 minus top-2
    # Candidates for diversity: the `pool_factor x budget` most uncertain images, from which
    # k-center greedy on the embeddings picks `budget` far apart (1 = uncertainty only).
    pool_factor: float = Field(3.0, ge=1)
    out_dir: ProjectPath = Path("data/to-label")


class MonitoringConfig(Section):
    dir: ProjectPath = Path("reports/monitoring")  # one JSON per drop checked, and the log's
    window_days: int = Field(7, ge=1)  # prediction-log drift: the last this many UTC days
    explain_per_class: int = Field(4, ge=0)  # evaluate: Grad-CAM of the worst errors per class
    drift: DriftConfig = DriftConfig()
    labels: LabelIssuesConfig = LabelIssuesConfig()
    select: SelectConfig = SelectConfig()


class SpaceParam(Section):
    """One dimension of `tune.space`: a range (low, high, log scale, step) or choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False  # sample evenly in log space (learning rates, weight decay)
    step: float | None = Field(None, gt=0)  # a grid inside the range; int ranges: default 1
    integer: bool = False  # whole numbers (batch sizes, epochs)
    choices: tuple[str | int | float | bool | None, ...] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> SpaceParam:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None:
            if ranged or self.log or self.step is not None or self.integer:
                raise ValueError("give choices, or low/high (with log, step, integer); not both")
            if not self.choices:
                raise ValueError("choices is empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices)")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined (Optuna samples one or the other)")
        return self


class TuneConfig(Section):
    """`visionloop tune`: an Optuna study over `space`, each trial a training run."""

    dir: ProjectPath = Path("reports/tune")  # trials/<n>/, best_params.yaml, study.json
    study: str = Field("visionloop", min_length=1, max_length=200)  # name in the storage
    # auto: an optuna.db beside a SQLite tracking store, the stack's PostgreSQL behind its
    # MLflow server; or a SQLAlchemy URL of your own.
    storage: str = "auto"
    seed: int = 0  # TPE sampler seed: the same study draws the same params
    startup_trials: int = Field(5, ge=0)  # TPE samples at random until this many trials
    prune_after_trials: int = Field(3, ge=0)  # median pruner: finished trials it waits for
    prune_warmup_epochs: int = Field(1, ge=0)  # no trial is pruned in its first epochs
    epochs: Annotated[int, Field(ge=1)] | None = None  # per trial; null: train.epochs
    space: dict[str, SpaceParam] = {}  # dotted params key -> range or choices


class ReproduceConfig(Section):
    """`visionloop reproduce --version N`: a registered version retrained from its lineage."""

    dir: ProjectPath = Path("reports/reproduce")  # <model>-v<N>.md and .json per version
    keep_workspace: bool = False  # keep the temporary checkout it retrained in (to inspect)


class Config(Section):
    root: Path = Field(Path("."), exclude=True)
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    prepare: PrepareConfig = PrepareConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    gate: GateConfig = GateConfig()
    registry: RegistryConfig = RegistryConfig()
    flows: FlowsConfig = FlowsConfig()
    stack: StackConfig = StackConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    serving: ServingConfig = ServingConfig()
    tune: TuneConfig = TuneConfig()
    reproduce: ReproduceConfig = ReproduceConfig()

    @model_validator(mode="after")
    def _space_names_params(self) -> Config:
        for key in self.tune.space:
            problem = _not_tunable(key)
            if problem:
                raise ValueError(f"tune.space: {key}: {problem}")
        return self


def _not_tunable(key: str) -> str | None:
    """Why a dotted key cannot be tuned (it names no leaf param, or a path), or None."""
    model: type[BaseModel] = Config
    parts = key.split(".")
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None or field.exclude:
            where = ".".join(parts[:depth]) or "the top level"
            allowed = ", ".join(_allowed_keys(tuple(parts[:depth])))
            return f"no such param (in {where}: {allowed})"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        if depth != len(parts) - 1:
            return f"{'.'.join(parts[: depth + 1])} is a single value, not a section"
        if parts[0] != "train":
            return "only train.* params can be tuned (every trial trains on the prepared data)"
        if "Path" in str(annotation):
            return "paths are not tunable"
        return None
    return "names a section; tune one of its keys"


def load_config(
    path: str | Path = DEFAULT_PARAMS, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Read and validate params.yaml; `overrides` is a nested dict merged on top (for tests)."""
    path = Path(path)
    raw = _read_yaml(path)
    if overrides:
        raw = deep_merge(raw, overrides)
    root = path.resolve().parent
    try:
        return Config.model_validate({**raw, "root": root}, context={"root": root})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found; run from the project folder or pass --params PATH"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    if "root" in raw:
        raise ConfigError(f"{path}: root: unknown key (paths are relative to this file's folder)")
    return raw


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `extra` laid over it, nested mappings merged key by key (a copy)."""
    merged = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(exc: ValidationError) -> str:
    """All problems on one line: `key.path: problem` joined by '; '."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(err["loc"][:-1]))
            parts.append(f"{key}: unknown key (allowed here: {allowed})")
        elif not err["loc"]:  # a rule across sections: its input is the whole file
            parts.append(err["msg"].removeprefix("Value error, "))
        else:
            parts.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def _allowed_keys(section_loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Config
    for part in section_loc:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [name for name, field in model.model_fields.items() if not field.exclude]
