"""Flag groups shared by the binaries, each defined once.

Enum values come from the library's constants; values are validated by the
library's config dataclasses, whose ``ConfigError`` names the fields it concerns:
:func:`with_flags` puts each field's flag beside it, from the one table below, in a
one-line absl usage error. Library ``InputError`` (a bad file, folder or setting)
becomes a one-line usage error too; any other exception keeps its traceback.
Only this module and the binaries import ``absl.flags``.
"""

import contextlib
import os
import re
import sys
import time

from absl import app
from absl import flags as absl_flags

from defense_gan_tf import config as config_lib
from defense_gan_tf import hardware

hardware.enable_onednn()  # before any binary imports TensorFlow
hardware.enable_gpu_memory_growth()  # several workers may share a GPU

FLAGS = absl_flags.FLAGS

# Config fields (dotted, as the dataclasses name them in errors) and the flags that set
# them: the one table. bin/train.py sets the GAN and model fields named here from its
# flags, and every binary names a flag beside the fields an error concerns.
FLAG_OF_FIELD = {
    "projection.iterations": "rec_iters", "projection.restarts": "rec_rr",
    "projection.learning_rate": "rec_lr", "projection.momentum": "rec_momentum",
    "projection.descent_precision": "rec_precision",
    "attack.eps": "fgsm_eps", "attack.alpha": "alpha",
    "attack.pgd_iterations": "pgd_iterations", "attack.pgd_step_size": "pgd_step_size",
    "attack.cw_iterations": "cw_iterations", "attack.cw_learning_rate": "cw_lr",
    "attack.cw_binary_steps": "cw_binary_steps", "num_tests": "num_tests",
    "num_train": "num_train", "epochs": "nb_epochs", "batch_size": "batch_size",
    "holdout": "holdout", "data_aug": "data_aug", "epochs_substitute": "nb_epochs_s",
    "attacks": "attacks", "eps_linf": "eps_linf", "eps_l2": "eps_l2",
    "pgd_steps": "pgd_steps", "eot_samples": "eot_samples", "latent_steps": "latent_steps",
    "attack_iterations": "attack_rec_iters", "attack_restarts": "attack_rec_rr",
    "sanity_images": "sanity_images", "num_images": "num_images",
    "paper_fgsm_images": "paper_fgsm_images", "paper_fgsm_batch_size": "attack_batch_size",
    "eps": "eps", "attack.cw_initial_const": "cw_const", "lmbda": "lmbda",
    "attack.cw_confidence": "cw_confidence", "classifier_epochs": "nb_epochs",
    "track_steps": "track_steps", "overwrite": "overwrite",
    "cw_learning_rate": "cw_learning_rate", "cw_const": "cw_const",
    "latent_learning_rate": "latent_learning_rate",
    "model.net_dim": "net_dim", "model.latent_dim": "latent_dim",
    "gan.batch_size": "batch_size", "gan.critic_steps": "critic_steps",
    "gan.gradient_penalty_weight": "gradient_penalty_weight",
    "gan.learning_rate": "learning_rate", "gan.train_iters": "train_iters",
    "gan.checkpoint_every": "checkpoint_every", "gan.sample_every": "sample_every",
    "gan.log_every": "log_every", "gan.seed": "seed", "gan.precision": "precision",
    "gan.ema_decay": "ema_decay", "gan.jit_compile": "jit_compile", "shard": "shard",
}


# Exit status of a binary whose --time_budget_minutes stopped it before the end: what it
# finished is kept, and the same command continues from there.
EXIT_UNFINISHED = 3


def define_time_budget_flag(rule: str, *, zero_means_none: bool = False) -> None:
    """--time_budget_minutes, the same in every binary that has one: ``rule`` says what
    stops when the minutes are spent, and the binary then exits with status 3
    (:data:`EXIT_UNFINISHED`); the same command continues. With ``zero_means_none`` the
    default is 0, no budget."""
    absl_flags.DEFINE_float(
        "time_budget_minutes", 0.0 if zero_means_none else None,
        rule + (" (0: no limit)" if zero_means_none else "")
        + f"; exit status {EXIT_UNFINISHED} then means: run the same command again, which "
        "continues from what was finished.")


def define_shard_flags(what: str) -> None:
    """--shard and --claim_timeout_minutes: this worker's share of ``what`` when several
    workers (machines, GPUs, processes) fill the same folders at once."""
    absl_flags.DEFINE_string(
        "shard", None, f"I/N: this worker is number I (from 0) of N filling the same "
        f"folders; it runs its share of {what} first (every N-th, from the I-th), then "
        "helps with the others', claiming each before it starts so that no two workers "
        "compute the same. auto: the index of a SLURM job array. Unset: one worker "
        "(claims still keep concurrent runs apart).")
    absl_flags.DEFINE_float(
        "claim_timeout_minutes", 10.0, "A claim whose worker stopped refreshing it (it "
        "died, or lost the shared folder) for this long is taken over by another worker; "
        "a worker on the same machine whose process is gone is taken over at once.")


def shard_settings():
    """(Shard, claim timeout in seconds) from --shard and --claim_timeout_minutes;
    refuses bad values naming the flag, before TensorFlow loads."""
    from defense_gan_tf.sharding import Shard

    if not FLAGS.claim_timeout_minutes > 0:
        raise app.UsageError(f"--claim_timeout_minutes must be > 0, got "
                             f"{FLAGS.claim_timeout_minutes}")
    with usage_errors():
        shard = Shard() if FLAGS.shard is None else Shard.parse(FLAGS.shard)
    return shard, 60.0 * FLAGS.claim_timeout_minutes


def time_budget_seconds():
    """--time_budget_minutes in seconds, None without a budget; refuses a value that is
    not positive (0 where it means no budget)."""
    minutes = FLAGS.time_budget_minutes
    zero_is_none = FLAGS["time_budget_minutes"].default == 0.0
    if minutes is None or (zero_is_none and minutes == 0):
        return None
    if not minutes > 0:
        raise app.UsageError("--time_budget_minutes must be > 0"
                             + (" (0: no limit)" if zero_is_none else "")
                             + f", got {minutes}")
    return 60.0 * minutes


def exit_unfinished(message: str) -> None:
    """Ends a binary that its time budget stopped: ``message`` (what is left), then
    status :data:`EXIT_UNFINISHED`."""
    print(f"not finished: {message}; run the same command again to continue", flush=True)
    sys.exit(EXIT_UNFINISHED)


def run(main) -> None:
    """``app.run(main)`` with every number flag checked first: a NaN or infinite value
    is refused naming the flag (NaN passes every range check, and a NaN step or
    constant can make an attack a no-op that reports full robustness). A usage error
    prints one line naming the flag and ``Try --help.``, not the whole help."""
    from defense_gan_tf import console

    console.quiet_tensorflow()  # before TensorFlow loads (the binaries import it late)
    # --help lists the key flags of the main module only: the shared ones defined here
    # are the binary's too.
    for flag in FLAGS.get_key_flags_for_module(__name__):
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)

    def checked(argv):
        try:
            check_finite_flags()
            return main(argv)
        except app.UsageError as e:  # one line and a pointer, not the whole help first
            print(f"{os.path.basename(sys.argv[0])}: {e}\nTry --help.", file=sys.stderr)
            sys.exit(e.exitcode)
    app.run(checked)


def check_finite_flags() -> None:
    """Refuses a NaN or infinite value of any float flag, naming it."""
    import math

    for name in FLAGS:
        flag = FLAGS[name]
        value = flag.value
        if isinstance(flag.parser, absl_flags.FloatParser) and value is not None and \
                not math.isfinite(value):
            raise app.UsageError(f"--{name} must be a finite number, got {value}")


def define_data_flags(*, with_celeba: bool = False) -> None:
    """--dataset (the MNIST-shaped datasets, and CelebA when asked) and --data_dir."""
    names = list(config_lib.IMAGE_DATASET_NAMES) + (["celeba"] if with_celeba else [])
    absl_flags.DEFINE_enum("dataset", "mnist", names, "Dataset (and config preset).")
    absl_flags.DEFINE_string("data_dir", None, "Local folder holding mnist/ and "
                             "fashion-mnist/ IDX files (default: $DEFENSE_GAN_DATA_DIR, "
                             "then tensorflow-datasets).")


def define_projection_flags() -> None:
    """--projection (a preset) and --rec_iters (L), --rec_rr (R), --rec_lr, --rec_precision,
    which override the preset when given: the Defense-GAN projection (paper section 3.3)."""
    absl_flags.DEFINE_enum("projection", "paper", list(config_lib.PROJECTION_PRESETS),
                           "Projection preset: paper (the authors' L, R) or fast (see "
                           "config.FAST_PROJECTION); the --rec_* flags override it.")
    defaults = config_lib.ProjectionConfig()
    absl_flags.DEFINE_integer("rec_iters", defaults.iterations, "Projection steps L "
                              "(default: the preset's).")
    absl_flags.DEFINE_integer("rec_rr", defaults.restarts, "Projection restarts R "
                              "(default: the preset's).")
    absl_flags.DEFINE_float("rec_lr", defaults.learning_rate, "Projection learning rate "
                            "(default: the preset's).")
    absl_flags.DEFINE_enum("rec_precision", defaults.descent_precision,
                           list(config_lib.DESCENT_PRECISIONS),
                           "Precision of the L descent steps (default: the preset's; "
                           "bfloat16 is faster only on CPUs with AVX512-BF16 or AMX-BF16, "
                           "or accelerators). The chosen restart is scored in float32.")


def define_execution_flags() -> None:
    """--replicas and --rec_jit: how the projection runs (not what it computes)."""
    absl_flags.DEFINE_enum("replicas", "one", ["one", "mirrored"], "one: each batch is "
                           "projected on one device; mirrored: split over all GPUs (or, "
                           "without GPUs, all logical CPU devices), with the same results.")
    absl_flags.DEFINE_bool("rec_jit", False, "Compile the projection with XLA: the same "
                           "results within float32 rounding, faster or slower by device "
                           "(bench/projection.py --variants=compiled,xla).")


@contextlib.contextmanager
def projection_execution():
    """The block's projections run as --replicas and --rec_jit say (the defaults load
    nothing: a dry run stays free of TensorFlow)."""
    if FLAGS.replicas == "one" and not FLAGS.rec_jit:
        yield
        return
    from defense_gan_tf.defense.projection import execution

    strategy = None
    if FLAGS.replicas == "mirrored":
        from defense_gan_tf.training import make_strategy

        strategy = make_strategy("mirrored")
        print(f"projection split over {strategy.num_replicas_in_sync} replica(s)")
    with execution(strategy=strategy, jit_compile=FLAGS.rec_jit):
        yield


def define_evaluation_flags(*, results_dir: str, model_flag: str, model_default: str,
                            model_help: str, num_tests: int,
                            choose_defense: bool = True) -> None:
    """The flags of the evaluation runs: defense, classifier, data sizes, outputs.

    With ``choose_defense=False`` (runs that always attack Defense-GAN) there is no
    --defense_type and --generator is required.
    """
    define_data_flags()
    define_projection_flags()
    define_execution_flags()
    absl_flags.DEFINE_enum(model_flag, model_default, list(config_lib.CLASSIFIER_MODELS),
                           model_help)
    if choose_defense:
        absl_flags.DEFINE_enum("defense_type", "none", list(config_lib.DEFENSES), "Defense.")
    absl_flags.DEFINE_bool("train_on_recs", False, "Train the classifier on reconstructions "
                           "(Defense-GAN-Rec) instead of originals (Defense-GAN-Orig).")
    absl_flags.DEFINE_float("fgsm_eps", 0.3, "L-infinity epsilon of the attack; also the "
                            "adversarial-training epsilon.")
    absl_flags.DEFINE_integer("num_tests", num_tests, "Test images attacked.")
    absl_flags.DEFINE_integer("num_train", 50_000, "Training images for the classifier.")
    absl_flags.DEFINE_integer("nb_epochs", 10, "Classifier training epochs.")
    absl_flags.DEFINE_string("generator", None, "Generator .keras (needed for defense_gan "
                             "and --train_on_recs).")
    if not choose_defense:
        absl_flags.mark_flag_as_required("generator")
    absl_flags.DEFINE_string("classifier", None, "Use this trained classifier (.keras, "
                             "logits) instead of training one; it must fit the run (e.g. "
                             "trained on reconstructions for --train_on_recs).")
    absl_flags.DEFINE_string("magnet", None, "MagNet folder (bin/train_magnet.py) for "
                             "--defense_type=magnet.")
    absl_flags.DEFINE_string("results_dir", results_dir, "Where JSON, table and figures go.")
    absl_flags.DEFINE_string("classifier_dir", "runs/classifiers", "Cache of trained "
                             "classifiers and reconstructions.")
    absl_flags.DEFINE_integer("seed", 0, "Seed of classifier training, attacks and "
                              "projections.")


def check_paths(*, files=(), folders=(), outputs=(), output_files=()) -> None:
    """Fails before any work, naming the flag: input files and folders must exist, output
    folders must not be files, and no output may land in a shipped package
    (``pretrained/<dataset>/``) unless the binary's --overwrite is given."""
    for name in files:
        path = FLAGS[name].value
        if path and not os.path.isfile(path):
            raise app.UsageError(f"--{name} {path} is not a file")
    for name in folders:
        path = FLAGS[name].value
        if path and not os.path.isdir(path):
            raise app.UsageError(f"--{name} {path} is not a folder")
    for name in outputs:
        path = FLAGS[name].value
        if path and os.path.exists(path) and not os.path.isdir(path):
            raise app.UsageError(f"--{name} {path} is a file, not a folder")
    check_not_shipped(*outputs, *output_files)


def check_not_shipped(*names: str) -> None:
    """Refuses, naming the flag, an output path inside a shipped package unless the
    binary has --overwrite and it is given."""
    from defense_gan_tf.shipped import refusal

    allowed = "overwrite" in FLAGS and FLAGS.overwrite
    for name in names:
        path = FLAGS[name].value
        why = path and not allowed and refusal(path, name)
        if why:
            raise app.UsageError(why)


def check_evaluation_flags() -> None:
    """Checks of the evaluation flags that no config can make: paths and flag pairs."""
    defense = FLAGS.defense_type if "defense_type" in FLAGS else "defense_gan"
    if (defense == "defense_gan" or FLAGS.train_on_recs) and not FLAGS.generator:
        raise app.UsageError("--generator is required with --defense_type=defense_gan or "
                             "--train_on_recs")
    if FLAGS.train_on_recs and defense != "defense_gan":
        raise app.UsageError("--train_on_recs goes with --defense_type=defense_gan")
    if defense == "adv_tr" and FLAGS.classifier:
        raise app.UsageError("--defense_type=adv_tr trains its classifier adversarially; a "
                             "--classifier file would be used as it is and filed as "
                             "adversarially trained (evaluate it with --defense_type=none)")
    if defense == "magnet" and not FLAGS.magnet:
        raise app.UsageError("--magnet (a bin/train_magnet.py folder) is required with "
                             "--defense_type=magnet")
    check_paths(files=("generator", "classifier"), folders=("data_dir", "magnet"),
                outputs=("results_dir", "classifier_dir"))


def projection_config(dataset: str = "mnist", **extra) -> config_lib.ProjectionConfig:
    """The --projection preset for ``dataset``, with the --rec_* flags given on the command
    line (and ``extra`` fields) applied; validated by the dataclass."""
    import dataclasses

    base = config_lib.projection_preset(FLAGS.projection, dataset)
    given = {field: FLAGS[flag].value for flag, field in (
        ("rec_iters", "iterations"), ("rec_rr", "restarts"), ("rec_lr", "learning_rate"),
        ("rec_precision", "descent_precision"))
        if FLAGS[flag].present}
    if "iterations" in given and base.prune_at:  # keep the schedule inside the new L
        given["prune_at"] = tuple(p for p in base.prune_at if p < given["iterations"])
    return dataclasses.replace(base, **given, **extra)


def run_spec(*, model: str, batch_size: int, attack=None, defense_type: str = None):
    """The RunSpec of the evaluation flags (the classifier flag's value is ``model``)."""
    from defense_gan_tf.records.runs import RunSpec

    return RunSpec(
        dataset=FLAGS.dataset, model=model,
        defense_type=defense_type or FLAGS.defense_type, train_on_recs=FLAGS.train_on_recs,
        attack=attack or config_lib.AttackConfig(eps=FLAGS.fgsm_eps),
        projection=projection_config(FLAGS.dataset), num_tests=FLAGS.num_tests,
        num_train=FLAGS.num_train, epochs=FLAGS.nb_epochs, seed=FLAGS.seed,
        batch_size=batch_size, generator=FLAGS.generator, classifier=FLAGS.classifier,
        magnet=FLAGS.magnet)


def with_flags(error: Exception) -> str:
    """``error``'s message with the flag beside each setting its ``fields`` name
    (``--rec_iters (projection.iterations) must be ...``), from the one table of fields
    and flags; the message as it is when the error names no field or this binary has no
    flag for it."""
    message = str(error)
    for field in getattr(error, "fields", ()):
        flag = FLAG_OF_FIELD.get(field)
        if flag is None or flag not in FLAGS:
            continue
        label = f"--{flag} ({field})" if "." in field or field != flag else f"--{flag}"
        # the field where it stands alone, not inside a longer name (``attack.eps``) or path
        message = re.sub(r"(?<![\w./-])" + re.escape(field) + r"(?![\w/])",
                         lambda _, label=label: label, message, count=1)
    return message


@contextlib.contextmanager
def resumable(kept: str):
    """Ctrl-C or SIGTERM inside the block ends the binary with status 130 and a one-line
    note that ``kept`` is on disk, instead of a traceback; loops that save their progress
    when interrupted (the Defense-GAN-Rec reconstructions) save it first."""
    from defense_gan_tf.console import interrupt_on_sigterm

    interrupt_on_sigterm()
    try:
        yield
    except KeyboardInterrupt:
        print(f"interrupted: {kept} kept; run the same command again", file=sys.stderr)
        sys.exit(130)


@contextlib.contextmanager
def usage_errors():
    """Turns library ``InputError`` (a config dataclass's ``ConfigError`` among them, with
    the flag beside each setting it names) into one-line absl usage errors; other
    exceptions pass unchanged."""
    from defense_gan_tf.errors import InputError

    try:
        yield
    except InputError as e:  # ConfigError and DatasetUnavailableError too
        raise app.UsageError(with_flags(e)) from None
    except FileNotFoundError as e:  # a data folder or file the user named
        raise app.UsageError(str(e)) from None


def evaluation_main(build_run, workflow):
    """The ``main`` of an evaluation binary: check flags, build the run, run ``workflow()``
    (a function returning the library's run function, imported late), print the table."""
    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        check_evaluation_flags()
        with usage_errors():
            run = build_run()
        from defense_gan_tf.console import command_line

        t0 = time.monotonic()
        with resumable("cached classifiers, and reconstructions and substitute labels so "
                       "far, are"), usage_errors(), projection_execution():
            outcome = workflow()(run, results_dir=FLAGS.results_dir,
                                 classifier_dir=FLAGS.classifier_dir,
                                 data_dir=FLAGS.data_dir, command=command_line(sys.argv))
        print(outcome.table)
        print(f"results: {outcome.json_path} ({time.monotonic() - t0:.0f} s)")
    return main
