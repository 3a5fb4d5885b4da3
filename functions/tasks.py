"""The three things the entry scripts do: search a cell, train a network, evaluate a checkpoint."""
from __future__ import annotations

import copy
import time

import torch

from functions.data_loading import training_loader
from functions.distributed import run_in_process_group
from functions.evaluation import evaluate_identification, evaluate_verification, write_score_file
from functions.lr_scaling import lr_scale
from functions.lr_schedules import build_lr_schedule
from functions.optimisers import build_optimizer
from functions.experiment import (
    IDENTIFICATION_SELECTION, VERIFICATION_SELECTION, Experiment, build_network,
    class_count, cohort_scoring, count_parameters, entropy_of_rows, genotype_text,
    identification_test_set, identification_train_set, identification_validator, inference_recipe,
    initial_checkpoint_file, model_state, start_experiment, trial_list, verification_train_set,
    verification_validator, write_results,
)
from functions.plots import (
    plot_architecture_weights, plot_det_curve, plot_score_histograms, plot_search_diagnostics,
)
from functions.search_diagnostics import (
    CELLS, DIAGNOSTICS_FILE, append_diagnostics, epoch_diagnostics, read_diagnostics,
)
from functions.recipe import check_recipe
from functions.speaker_model import SpeakerModel
from functions.run_directory import load_resume_checkpoint
from functions.trainer import ArchitectureStep, Selection, Trainer
from models.genotypes import choose_genotype
from models.search_network import gumbel_temperature
from models.visualize import plot_genotype
from utils.checkpoint import load_checkpoint, load_state_dict_strict
from utils.run_logging import get_logger


def _genotype_for(exp_cfg, args, checkpoint: dict | None):
    """The genotype of a genotype network: from --text_arch, else from the checkpoint being resumed."""
    if exp_cfg.MODEL.NAME != "model":
        return None
    carried = checkpoint.get("genotype") if checkpoint else None
    return choose_genotype(getattr(args, "text_arch", None), carried, "of the checkpoint being resumed")


def _resumed_checkpoint(exp: Experiment, args) -> dict | None:
    """The checkpoint being resumed (or None), read before anything is built so its genotype can be used."""
    if not getattr(args, "load_path", None):
        return None
    checkpoint = load_resume_checkpoint(exp.run, get_logger())
    check_recipe(checkpoint, exp.cfg, f"the run being resumed ({exp.run.root})")
    return checkpoint


def _initial_checkpoint(exp: Experiment, args) -> dict | None:
    """The checkpoint of --init_from (or None), whose weights, not state, a new run starts from."""
    if not getattr(args, "init_from", None):
        return None
    path = initial_checkpoint_file(args.init_from)
    checkpoint = load_checkpoint(path, map_location="cpu")
    check_recipe(checkpoint, exp.cfg, f"--init_from {path}")
    return checkpoint


def _finish(exp: Experiment, results: dict) -> None:
    if exp.ctx.is_main:
        write_results(exp.run.root / "results.json", results)
        get_logger().info(f"results written to {exp.run.root / 'results.json'}")


def run_training(args, task: str, logs_kind: str) -> int:
    """Train a network (genotype network or ResNet) for identification or verification."""
    return run_in_process_group(lambda: _train(args, task, logs_kind))


def _train(args, task: str, logs_kind: str) -> int:
    exp = start_experiment(args, logs_kind, getattr(args, "load_path", None))
    cfg, ctx, logger = exp.cfg, exp.ctx, get_logger()
    checkpoint = _resumed_checkpoint(exp, args)
    initial = _initial_checkpoint(exp, args)
    genotype = _genotype_for(cfg, args, checkpoint or initial)
    train_set = identification_train_set(cfg) if task == "identification" else verification_train_set(cfg)
    model = build_network(cfg, ctx, class_count(cfg, train_set.num_classes), genotype)
    notes = [f"{cfg.MODEL.NAME}: {count_parameters(model):,} parameters, {train_set.num_classes} classes, "
             f"{len(train_set)} training utterances"]
    for weights in (checkpoint, initial):
        if weights is not None:
            load_state_dict_strict(model, model_state(weights))
    if initial is not None:
        notes.append(f"weights from --init_from {args.init_from} (epoch {initial.get('epoch')} of that run); "
                     "the schedule starts at epoch 0")
    optimizer = build_optimizer(cfg, model.parameters())
    scheduler = build_lr_schedule(cfg, optimizer)
    loader = training_loader(train_set, cfg.TRAIN.BATCH_SIZE, cfg.SEED, ctx, cfg.DATASET.NUM_WORKERS,
                             cfg.TRAIN.MAX_STEPS_PER_EPOCH)
    if task == "identification":
        validate = identification_validator(cfg, ctx, model, "val", "val")
        selection = IDENTIFICATION_SELECTION
    else:
        trials = trial_list(cfg)
        notes.append(f"{len(trials.labels)} trials over {len(trials.paths)} utterances"
                     f" ({trials.skipped} skipped: missing features)")
        validate = verification_validator(cfg, ctx, model, trials)
        selection = VERIFICATION_SELECTION
    run = exp.open_run()
    for note in notes:
        logger.info(note)
    end = cfg.TRAIN.END_EPOCH
    trainer = Trainer(
        cfg, ctx, run, model, optimizer, scheduler, loader, validate, selection,
        drop_path_prob=lambda epoch: cfg.MODEL.DROP_PATH_PROB * epoch / end,
        checkpoint_extras=lambda: inference_recipe(genotype, train_set),
    )
    if checkpoint is not None:
        trainer.restore(checkpoint)
    if ctx.is_main:
        run.save_run_info(cfg, genotype_text(genotype))
    started = time.time()
    history = trainer.fit()
    results = {"task": task, "model": cfg.MODEL.NAME, "parameters": count_parameters(model),
               "epochs": len(history), "train_seconds": time.time() - started}
    if task == "identification":
        results.update(_identification_report(exp, model, trainer.state.epoch))
    else:
        results.update(_verification_report(history))
    _finish(exp, results)
    return 0


def _identification_report(exp: Experiment, model, epochs_done: int) -> dict:
    """Test-partition scores of the last weights and of the checkpoint selected on `val` (the same weights, not
    evaluated twice, when the selection is the last epoch)."""
    cfg, ctx, logger = exp.cfg, exp.ctx, get_logger()
    test_set = identification_test_set(cfg, "test")
    report = {"test_last": evaluate_identification(model, test_set, ctx, cfg.DATASET.NUM_WORKERS)}
    summary = f"test Top-1 {report['test_last']['top1']:.2f} % at the last epoch"
    if exp.run.best_checkpoint.exists():
        best = load_checkpoint(exp.run.best_checkpoint, ctx.device)
        if int(best["epoch"]) == epochs_done:
            report["test_selected_on_val"] = dict(report["test_last"])
        else:
            selected = copy.deepcopy(model)
            load_state_dict_strict(selected, model_state(best))
            report["test_selected_on_val"] = evaluate_identification(selected, test_set, ctx,
                                                                     cfg.DATASET.NUM_WORKERS)
        summary = (f"test Top-1 {report['test_selected_on_val']['top1']:.2f} % of the checkpoint selected on val "
                   f"(epoch {int(best['epoch']) - 1}), {report['test_last']['top1']:.2f} % at the last epoch")
    for name, metrics in report.items():
        logger.info(f"{name}: Top-1 {metrics['top1']:.2f} %, Top-5 {metrics['top5']:.2f} % "
                    f"(window-weighted Top-1 {metrics['top1_window_weighted']:.2f} %)")
    logger.info(summary)
    return report


_VERIFICATION_METRICS = ("eer", "min_dcf_0.01", "min_dcf_0.05")


def _verification_metrics(row: dict) -> dict:
    """Epoch and the verification metrics of a history row, raw and under each score normalisation (suffixed)."""
    return {k: v for k, v in row.items() if k == "epoch" or k.startswith(_VERIFICATION_METRICS)}


def _verification_report(history: list[dict]) -> dict:
    validated = [row for row in history if "eer" in row]
    last = validated[-1]
    best = min(validated, key=lambda row: row["eer"])
    report = {
        "last_epoch": _verification_metrics(last),
        "best_selected_on_test_trials": _verification_metrics(best),
    }
    normalised = "".join(f", {k} {v:.2f} %" for k, v in last.items() if k.startswith("eer_"))
    get_logger().info(f"last epoch: EER {last['eer']:.2f} %{normalised}, minDCF(0.01) {last['min_dcf_0.01']:.4f}; "
                      f"best of run, selected on the test trials: EER {best['eer']:.2f} % (epoch {best['epoch']})")
    return report


def genotype_settled(patience: int):
    """Early stopping of a search: the genotype of the last `patience` + 1 epochs is one and the same."""
    def settled(history: list[dict]) -> str | None:
        recent = {row.get("genotype") for row in history[-(patience + 1):]}
        if len(history) > patience and len(recent) == 1:
            return f"the derived genotype has not changed for {patience} epochs (TRAIN.SEARCH_PATIENCE)"
        return None

    return settled


def run_search(args) -> int:
    """Search a cell on the `train` partition, with the architecture stepped on `val` (SPEC §10)."""
    return run_in_process_group(lambda: _search(args))


def _search(args) -> int:
    exp = start_experiment(args, "logs_search", getattr(args, "load_path", None))
    cfg, ctx, logger = exp.cfg, exp.ctx, get_logger()
    checkpoint = _resumed_checkpoint(exp, args)
    train_set = identification_train_set(cfg, "train")
    arch_set = identification_train_set(cfg, "val")
    model = build_network(cfg, ctx, class_count(cfg, train_set.num_classes), None)
    if checkpoint is not None:
        load_state_dict_strict(model, model_state(checkpoint))
    global_batch = cfg.TRAIN.BATCH_SIZE * ctx.world_size
    scale = lr_scale(cfg.TRAIN.SEARCH_LR_SCALING, global_batch, cfg.TRAIN.SEARCH_REFERENCE_BATCH)
    optimizer = build_optimizer(cfg, model.weight_parameters(), scale)
    arch_optimizer = torch.optim.Adam(
        model.arch_parameters(), lr=cfg.TRAIN.ARCH_LR * scale, betas=(cfg.TRAIN.ARCH_BETA1, cfg.TRAIN.ARCH_BETA2),
        weight_decay=cfg.TRAIN.ARCH_WD,
    )
    scheduler = build_lr_schedule(cfg, optimizer)
    loader = training_loader(train_set, cfg.TRAIN.BATCH_SIZE, cfg.SEED, ctx, cfg.DATASET.NUM_WORKERS,
                             cfg.TRAIN.MAX_STEPS_PER_EPOCH)
    arch_loader = training_loader(arch_set, cfg.TRAIN.ARCH_BATCH_SIZE or cfg.TRAIN.BATCH_SIZE, cfg.SEED + 1, ctx,
                                  cfg.DATASET.NUM_WORKERS)
    validate = identification_validator(cfg, ctx, model, "test", "test")
    run = exp.open_run()
    logger.info(f"search space {cfg.MODEL.SEARCH_SPACE}, single path {cfg.MODEL.SINGLE_PATH}: "
                f"{count_parameters(model):,} parameters, {train_set.num_classes} classes")
    logger.info(f"global batch {global_batch} ({cfg.TRAIN.BATCH_SIZE} x {ctx.world_size} processes); learning "
                f"rates x {scale:.4g} (TRAIN.SEARCH_LR_SCALING {cfg.TRAIN.SEARCH_LR_SCALING}): weights "
                f"{cfg.TRAIN.LR * scale:.4g}, architecture {cfg.TRAIN.ARCH_LR * scale:.4g}")
    end = cfg.TRAIN.END_EPOCH
    arch_lr, warmup = cfg.TRAIN.ARCH_LR * scale, cfg.TRAIN.ARCH_WARMUP_EPOCHS
    if warmup or cfg.TRAIN.ARCH_SAMPLES > 1 or cfg.TRAIN.ARCH_BATCH_SIZE:
        arch_batch = cfg.TRAIN.ARCH_BATCH_SIZE or cfg.TRAIN.BATCH_SIZE
        logger.info(f"architecture steps from epoch {warmup} on, on batches of {arch_batch} with "
                    f"{cfg.TRAIN.ARCH_SAMPLES} Gumbel sample(s) each")
    # The alphas before the first step and at the start of the current epoch, for the diagnostics; a resumed
    # search takes them from its checkpoint.

    def current() -> dict:
        return dict(zip(CELLS, (alphas.detach().cpu().clone() for alphas in model.arch_parameters())))

    initial_alphas = checkpoint.get("arch_initial", current()) if checkpoint else current()
    epoch_start_alphas = checkpoint.get("arch_epoch_start", current()) if checkpoint else current()
    steps_per_epoch = loader.sampler.batches_per_epoch

    def set_temperature(epoch: int) -> None:
        model.tau = gumbel_temperature(epoch, end, cfg.MODEL.TAU_MAX, cfg.MODEL.TAU_MIN)

    def record_architecture(epoch: int, metrics: dict) -> None:
        genotype = model.genotype()
        text = genotype_text(genotype)
        weights = dict(zip(("normal", "reduce"), (w.cpu() for w in model.arch_weights())))
        for cell, w in weights.items():
            metrics[f"alpha_entropy_{cell}"] = entropy_of_rows(w)
        metrics["tau"] = model.tau
        metrics["genotype"] = text
        steps = steps_per_epoch if epoch >= warmup else 0
        total_steps = steps_per_epoch * max(0, epoch + 1 - warmup)
        diagnostics = epoch_diagnostics(current(), epoch_start_alphas, initial_alphas, steps, total_steps, arch_lr)
        metrics.update(diagnostics["row"])
        epoch_start_alphas.update(current())
        if not ctx.is_main:
            return
        run.save_run_info(cfg, text)
        append_diagnostics(run.log_dir / DIAGNOSTICS_FILE, epoch, diagnostics)
        plot_search_diagnostics(read_diagnostics(run.log_dir / DIAGNOSTICS_FILE),
                                run.log_dir / "search_diagnostics.png", f"architecture weights, lr {arch_lr:.4g}")
        (run.log_dir / "genotypes.txt").open("a", encoding="utf-8").write(f"{epoch}\t{text}\n")
        plot_genotype(genotype, run.log_dir / "cell")
        plot_architecture_weights(
            {cell: w.numpy() for cell, w in weights.items()},
            {"normal": model.space.edge_ops(False), "reduce": model.space.edge_ops(True)},
            run.log_dir / "architecture_weights.png", f"softmax(alpha), epoch {epoch}",
        )

    trainer = Trainer(
        cfg, ctx, run, model, optimizer, scheduler, loader, validate,
        Selection(metric="test_top1", higher_is_better=True, checkpoint_key="best_acc1"),
        drop_path_prob=lambda epoch: cfg.TRAIN.DROPPATH_PROB * epoch / max(1, end - 1),
        architecture=ArchitectureStep(arch_loader, arch_optimizer, warmup, cfg.TRAIN.ARCH_SAMPLES),
        checkpoint_extras=lambda: {"genotype": model.genotype(), "arch_initial": initial_alphas,
                                   "arch_epoch_start": epoch_start_alphas},
        on_epoch_end=record_architecture,
        on_epoch_start=set_temperature,
        stop_early=genotype_settled(cfg.TRAIN.SEARCH_PATIENCE) if cfg.TRAIN.SEARCH_PATIENCE > 0 else None,
        # DDP must look for parameters a step leaves out: single-path mode skips operations, and a network of
        # fewer than 3 cells has no normal cell, so alphas_normal never takes part.
        find_unused_parameters=cfg.MODEL.SINGLE_PATH or all(cell.reduction for cell in model.cells),
    )
    if checkpoint is not None:
        trainer.restore(checkpoint)
    started = time.time()
    history = trainer.fit()
    genotype = model.genotype()
    _finish(exp, {"task": "search", "genotype": genotype_text(genotype), "epochs": len(history),
                  "stopped_early": len(history) < end, "global_batch": global_batch, "lr_scale": scale,
                  "search_seconds": time.time() - started, "last": history[-1] if history else {}})
    if ctx.is_main:
        print(genotype_text(genotype))
    return 0


def run_evaluation(args, task: str) -> int:
    """Evaluate a checkpoint: Top-1/Top-5 on the test partition, or EER/minDCF on a trial list."""
    return run_in_process_group(lambda: _evaluate(args, task))


def _evaluate(args, task: str) -> int:
    exp = start_experiment(args, "logs_eval", log_name="evaluate.log")
    cfg, ctx, logger = exp.cfg, exp.ctx, get_logger()
    num_classes = None
    if task == "identification":
        dataset = identification_test_set(cfg, "test")
        num_classes = class_count(cfg, dataset.num_classes)
    else:
        trials = trial_list(cfg, getattr(args, "trials", None))
        cohort = cohort_scoring(cfg)
    loaded = SpeakerModel.from_checkpoint(args.load_path, ctx.device, text_arch=getattr(args, "text_arch", None),
                                          evaluation_config=cfg, num_classes=num_classes)
    path, model = loaded.checkpoint, loaded.network
    run = exp.open_run()
    logger.info(f"evaluating {path}")
    if task == "identification":
        metrics = evaluate_identification(model, dataset, ctx, cfg.DATASET.NUM_WORKERS)
        lines = [f"Top-1 {metrics['top1']:.2f} %", f"Top-5 {metrics['top5']:.2f} %",
                 f"window-weighted Top-1 (the published meter) {metrics['top1_window_weighted']:.2f} %",
                 f"{metrics['utterances']} test utterances"]
    else:
        result = evaluate_verification(model, trials.utterance_dataset(cfg.DATASET.PARTIAL_N_FRAMES),
                                       trials.labels, trials.first, trials.second, ctx, cfg.DATASET.NUM_WORKERS,
                                       cohort)
        metrics = result.summary()
        metrics["skipped_trials"] = trials.skipped
        lines = []
        for suffix, scored in [("", result), *((f"_{name}", r) for name, r in result.normalised.items())]:
            label = f" ({suffix[1:]})" if suffix else ""
            lines += [f"EER{label} {metrics['eer' + suffix]:.2f} %",
                      f"minDCF(p=0.01){label} {metrics['min_dcf_0.01' + suffix]:.4f}",
                      f"minDCF(p=0.05){label} {metrics['min_dcf_0.05' + suffix]:.4f}"]
            if ctx.is_main:
                write_score_file(run.root / f"scores{suffix}.txt", scored, trials.first_paths, trials.second_paths)
                plot_det_curve(scored.scores, scored.labels, scored.eer, run.root / f"det_curve{suffix}.png")
                plot_score_histograms(scored.scores, scored.labels, run.root / f"score_histograms{suffix}.png")
        lines.append(f"{metrics['trials']} trials ({trials.skipped} skipped: missing features)")
    if ctx.is_main:
        metrics.update({"checkpoint": str(path), "parameters": count_parameters(model), "task": task})
        write_results(run.root / "results.json", metrics)
        for line in lines:
            logger.info(line)
        logger.info(f"results in {run.root}")
    return 0

