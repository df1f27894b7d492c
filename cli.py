"""The ``onnxpruner`` command line: argparse, subcommands, printing, exit codes.

The only module that prints to a terminal or calls ``sys.exit``. Exit 0 ok, 2 usage (a bad option
or spec), 1 any other failure; one ``error:`` line (the traceback behind ``--debug``); nothing
written at ``-o`` on failure, the input never modified. Every command is a thin shell around the
API: ``pipeline.prune`` / ``pipeline.inspect``, the fine-tuning engine, and the workflows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import ir
from passes.base import PassError
from passes.finetune import DataError, TrainConfig, finetune
from passes.score import ScorePass
from pipeline import (DumpInstrument, Instrument, PipelineError, SpecError, TimingInstrument, check_input,
                      inspect, open_model, prune)
from workflows import batch, demo, schedules, sensitivity


def trees_to_dot(info: dict) -> str:
    lines = ["digraph trees {", "  rankdir=LR;"]
    for i, t in enumerate(info["trees"]):
        lines.append(f'  subgraph cluster_{i} {{ label="{t["root"]} ({t["pattern"]})";')
        for a, b in t["edges"]:
            lines.append(f'    "{i}:{a}" -> "{i}:{b}";')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"



class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="onnxpruner", description="Structured channel pruning for ONNX models.")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("prune", help="prune a model")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--criterion", default="l1")
    p.add_argument("--scope", default="tree", choices=["tree", "node"])
    p.add_argument("--passes", help="a pass spec replacing the default pipeline")
    p.add_argument("--report", help="write the report JSON here")
    p.add_argument("--no-verify", action="store_true", help="skip ir.verify after each pass")
    p.add_argument("--time-passes", action="store_true")
    p.add_argument("--dump-after", default="", help="comma-separated pass names")
    p.add_argument("--dump-dir", default="onnxpruner-dumps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calib", help="calibration data for hrank/hrank-star/taylor/recon and --recover: "
                   ".npz with x (y optional)")
    p.add_argument("--recover", nargs="?", const="bias,bn", metavar="STEPS",
                   help="after the proof, recover accuracy from --calib (no labels): bias,bn (default), "
                        "add ls for a least-squares refit; without --calib nothing is changed")
    p.add_argument("--ratios", help="a JSON ratio plan: node -> ratio (e.g. from `sensitivity -o`)")
    p.add_argument("--target-flops", type=float, default=0.0, help="remove this fraction of the FLOPs")
    p.add_argument("--target-params", type=float, default=0.0, help="remove this fraction of the parameters")
    p.add_argument("--rank", choices=["layer", "global"], help="per-layer ratio or one global ranking "
                   "(default: layer; global with a target)")
    p.add_argument("--max-ratio", type=float, help="global ranking/targets: most of one group removed (0.9)")
    p.add_argument("--heads", type=float, help="ratio of attention heads removed (default: --ratio)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    s = sub.add_parser("sensitivity", help="accuracy per group at ratios 0.1..0.9, and a ratio plan")
    s.add_argument("model")
    s.add_argument("--val", required=True, help="validation data: .npz with x (float32) and y (int64)")
    s.add_argument("-o", "--output", help="write the ratio plan (JSON) for --budget here")
    s.add_argument("--budget", type=float, default=1.0, help="accuracy drop allowed per group, in points")
    s.add_argument("--plot", help="write a PNG plot of accuracy against ratio per group")
    s.add_argument("--criterion", default="l1")
    s.add_argument("--scope", default="tree", choices=["tree", "node"])
    s.add_argument("--calib", help="calibration data for data criteria")
    s.add_argument("--steps", type=float, nargs="+", default=None, help="ratios to try (default 0.1 .. 0.9)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sc = sub.add_parser("schedule", help="iterative pruning (prune -> fine-tune, N steps) or soft filter pruning")
    sc.add_argument("model")
    sc.add_argument("-o", "--output", required=True)
    sc.add_argument("--mode", default="iterative", choices=["iterative", "soft"])
    sc.add_argument("--data", required=True, help="training data: .npz with x (float32) and y")
    sc.add_argument("--val", help="validation data (.npz): accuracy per step/epoch")
    sc.add_argument("--ratio", type=float, default=0.5, help="final ratio (iterative: cumulative)")
    sc.add_argument("--target-flops", type=float, default=0.0, help="iterative: final FLOPs reduction instead of a ratio")
    sc.add_argument("--steps", type=int, default=3, help="iterative: prune -> fine-tune rounds")
    sc.add_argument("--schedule", default="linear", choices=["linear", "agp"], help="iterative: ratio growth")
    sc.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per step (soft: in all)")
    sc.add_argument("--lr", type=float, default=1e-3)
    sc.add_argument("--batch-size", type=int, default=32)
    sc.add_argument("--criterion", default=None, help="default: l1 (iterative), l2 (soft)")
    sc.add_argument("--scope", default=None, choices=["tree", "node"], help="default: tree (iterative), node (soft)")
    sc.add_argument("--calib", help="calibration data for data criteria")
    sc.add_argument("--report", help="write the history and last prune report (JSON) here")
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    i = sub.add_parser("inspect", help="show tags, association trees and groups")
    i.add_argument("model")
    i.add_argument("--json", action="store_true")
    i.add_argument("--dot", help="write the association trees as Graphviz")
    i.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    f = sub.add_parser("finetune", help="fine-tune a model with ONNX Runtime training")
    f.add_argument("model")
    f.add_argument("--data", required=True, help="training data: .npz with x (float32) and y")
    f.add_argument("--val", help="validation data (.npz); the best epoch on it is kept")
    f.add_argument("-o", "--output", required=True)
    f.add_argument("--epochs", type=int, default=3)
    f.add_argument("--lr", type=float, default=1e-3)
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--loss", default="ce", choices=["ce", "mse"])
    f.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    f.add_argument("--schedule", default="cosine", choices=["cosine", "step", "constant"])
    f.add_argument("--freeze", default="", help="comma-separated initializer or node names kept fixed")
    f.add_argument("--checkpoint", help="a folder: an interrupted run resumes from it")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    b = sub.add_parser("batch", help="prune many models × variants, locally or on Ray")
    b.add_argument("models", nargs="*", help="model files (or use --plan)")
    b.add_argument("--plan", help="a JSON or YAML plan of models and variants")
    b.add_argument("-o", "--output", required=True, help="output folder")
    b.add_argument("--ratio", type=float, nargs="+", default=[0.5])
    b.add_argument("--criterion", nargs="+", default=["l1"])
    b.add_argument("--scope", nargs="+", default=["tree"], choices=["tree", "node"])
    b.add_argument("--jobs", type=int, default=1, help="jobs run at once (processes or Ray tasks)")
    b.add_argument("--executor", default="local", choices=["local", "ray"])
    b.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
    b.add_argument("--force", action="store_true", help="redo jobs that are already done")
    b.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    d = sub.add_parser("demo", help="digits: train a small residual CNN with ORT, prune at 0.5, fine-tune, report")
    d.add_argument("--out-dir", default="demo-output", help="where the models, report and plot go")
    d.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return ap


def _check_output(path: str, model: str | None = None) -> None:
    folder = Path(path).parent if Path(path).parent != Path("") else Path(".")
    if not folder.is_dir():
        raise UsageError(f"output folder {str(folder)!r} does not exist")
    if Path(path).is_dir():
        raise UsageError(f"{path}: is a folder, not a file path")
    if model is not None and Path(model).exists() and Path(path).resolve() == Path(model).resolve():
        raise UsageError(f"{path}: output would overwrite the input model")


def _write_text_atomic(path: str, text: str) -> None:
    ir.save_bytes(text.encode(), path)


def _cmd_prune(args) -> int:
    _check_output(args.output, args.model)
    if args.report:
        _check_output(args.report, args.model)
    if args.passes is None and not (0.0 <= args.ratio < 1.0):
        raise UsageError(f"--ratio must be in [0, 1), got {args.ratio}")
    for flag, value in (("--target-flops", args.target_flops), ("--target-params", args.target_params)):
        if not (0.0 <= value < 1.0):
            raise UsageError(f"{flag} must be in [0, 1), got {value}")
    if args.target_flops and args.target_params:
        raise UsageError("give --target-flops or --target-params, not both")
    ratios = None
    if args.ratios:
        try:
            ratios = sensitivity.read_plan(args.ratios)
        except sensitivity.PlanError as exc:
            raise UsageError(str(exc)) from None
    if args.calib and not Path(args.calib).is_file():
        raise DataError(f"{args.calib}: no such data file")
    instruments: list[Instrument] = []
    if args.time_passes:
        instruments.append(TimingInstrument(sys.stderr))
    if args.dump_after:
        instruments.append(DumpInstrument(args.dump_after.split(","), args.dump_dir))
    result = prune(args.model, ratio=args.ratio, criterion=args.criterion, scope=args.scope,
                   passes=args.passes, verify=not args.no_verify, seed=args.seed,
                   instruments=instruments, calib_data=args.calib, ratios=ratios,
                   target_flops=args.target_flops, target_params=args.target_params,
                   rank=args.rank, max_ratio=args.max_ratio, heads=args.heads, recover=args.recover)
    ir.save(result.model, args.output, result.external)
    if args.report:
        try:
            _write_text_atomic(args.report, json.dumps(result.report, indent=2) + "\n")
        except OSError:  # all or nothing: no model at -o without its report
            Path(args.output).unlink(missing_ok=True)
            Path(args.output + ".data").unlink(missing_ok=True)
            raise
    print(_summary(result.report))
    return 0


def _recovery_lines(rec: dict | None) -> list[str]:
    """What the ``recover`` pass bought, or why it did nothing."""
    if rec is None:
        return []
    if not rec["applied"]:
        return [f"recovery: not applied ({rec['reason']})"]
    if "heldout_error_before" not in rec:
        return [f"recovery ({','.join(rec['method'])}): applied; too few calibration samples to hold any out"]
    line = (f"recovery ({','.join(rec['method'])}): held-out output error vs original "
            f"{rec['heldout_error_before']:.4f} -> {rec['heldout_error_after']:.4f} on {rec['heldout_samples']} samples")
    if "heldout_top1_after" in rec:
        line += (f"; top-1 {rec['heldout_top1_before']:.4f} -> {rec['heldout_top1_after']:.4f} "
                 f"(original {rec['heldout_top1_original']:.4f})")
    return [line + ("" if rec["helped"] else "; it did NOT help")]


def _summary(report: dict) -> str:
    def ratio(a, b):
        return f"{b / a:.3f}" if a else "n/a"

    pruned = sum(1 for g in report["groups"] if g.get("pruned"))
    left = [g for g in report["groups"] if not g.get("pruned") and g.get("reason")]
    lines = [f"params {report['params_before']:,} -> {report['params_after']:,} "
             f"(x{ratio(report['params_before'], report['params_after'])})",
             f"FLOPs  {report['flops_before']:,} -> {report['flops_after']:,} "
             f"(x{ratio(report['flops_before'], report['flops_after'])})",
             f"groups {pruned} pruned of {len(report['groups'])}; {len(left)} left alone",
             f"verified {report['verified']} (max abs diff {report['max_abs_diff']})"]
    lines += _recovery_lines(report.get("recovery"))
    if report.get("target"):
        t = report["target"]
        lines.append(f"target: remove {t['reduction']:g} of the {t['kind']}; achieved {t['achieved']:.4f} "
                     f"({'met' if t['met'] else 'NOT met'} within 1 point; predicted {t['predicted_reduction']})")
    for g in left[:10]:
        lines.append(f"  group {g['id']} ({', '.join(g['roots'][:3])}): {g['reason']}")
    if len(left) > 10:
        lines.append(f"  ... {len(left) - 10} more in the report")
    return "\n".join(lines)


def _cmd_finetune(args) -> int:
    _check_output(args.output, args.model)
    try:
        config = TrainConfig(args.epochs, args.lr, args.batch_size, args.loss, args.optimizer,
                             args.schedule, seed=args.seed, freeze=tuple(n for n in args.freeze.split(",") if n))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    model, external, where = open_model(args.model)
    check_input(model, where)
    result = finetune(model, args.data, args.val, config, args.checkpoint)
    ir.save(result.model, args.output, external)
    last = result.history[-1] if result.history else {}
    print(f"fine-tuned {len(result.history)} epochs (resumed after {result.resumed_from}); "
          f"best epoch {result.best_epoch}; last: " +
          ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in last.items()))
    return 0


def _cmd_batch(args) -> int:
    if bool(args.models) == bool(args.plan):
        raise UsageError("give model files or --plan, not both (and not neither)")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    for r in args.ratio:
        if not (0.0 <= r < 1.0):
            raise UsageError(f"--ratio must be in [0, 1), got {r}")
    parent = Path(args.output).resolve().parent
    if not parent.is_dir():
        raise UsageError(f"output folder's parent {str(parent)!r} does not exist")
    try:
        if args.plan:
            plan = batch.read_plan(args.plan)
            jobs = batch.make_jobs(plan["models"], plan.get("variants", []))
        else:
            variants = [{"name": f"{c}-{s}-r{r:g}", "ratio": r, "criterion": c, "scope": s}
                        for r in args.ratio for c in args.criterion for s in args.scope]
            jobs = batch.make_jobs(args.models, variants)
    except batch.PlanError as exc:
        raise UsageError(str(exc)) from None
    result = batch.run_batch(jobs, args.output, args.executor, args.jobs, args.address, args.force)
    print(Path(result.summary_md).read_text(), end="")
    failed = sum(1 for r in result.rows if r.get("error"))
    print(f"{len(result.rows)} jobs: {len(result.rows) - failed} done, {failed} failed, "
          f"{result.skipped} already done; {result.seconds:.1f} s; summary in {result.summary_csv}")
    return 1 if failed else 0


def _cmd_inspect(args) -> int:
    if args.dot:
        _check_output(args.dot)
    info = inspect(args.model)
    if args.dot:
        _write_text_atomic(args.dot, trees_to_dot(info))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['model']}: " + ", ".join(f"{k} {v}" for k, v in sorted(info["roles"].items())))
    for b in info["barriers"]:
        print(f"  barrier {b['node']} ({b['op']}): {b['reason']}")
    for t in info["trees"]:
        blocked = f"; blocked at {', '.join(t['blockers'])}" if t["blockers"] else ""
        print(f"  tree {t['root']} ({t['pattern']}): leaves {', '.join(t['leaves']) or '-'}{blocked}")
    for g in info["groups"]:
        state = "prunable" if g.get("reason") is None or g["reason"].startswith("not selected") \
            else f"left alone: {g['reason']}"
        print(f"  group {g['id']} {g['pattern']} roots={','.join(g['roots'])} "
              f"leaves={','.join(g['leaves']) or '-'} channels={g['channels_before']} {state}")
    return 0


def _cmd_sensitivity(args) -> int:
    if args.output:
        _check_output(args.output, args.model)
    if args.plot:
        _check_output(args.plot, args.model)
    if not (args.budget >= 0):
        raise UsageError(f"--budget must be a non-negative number of points, got {args.budget}")
    steps = tuple(args.steps) if args.steps else sensitivity.STEPS
    bad = [r for r in steps if not (0.0 < r < 1.0)]
    if bad:
        raise UsageError(f"--steps must be in (0, 1), got {bad[0]}")
    try:
        ScorePass(criterion=args.criterion, scope=args.scope)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    model, _, where = open_model(args.model)
    check_input(model, where)
    result = sensitivity.analyze(model, args.val, steps, args.criterion, args.scope, args.seed,
                                 args.calib, stream=sys.stderr)
    the_plan = sensitivity.plan(result, args.budget)
    if args.plot:
        tmp = args.plot + ".tmp.png"
        sensitivity.plot(result, tmp)
        os.replace(tmp, args.plot)
    if args.output:
        _write_text_atomic(args.output, json.dumps(the_plan, indent=2) + "\n")
    print(sensitivity.format_table(result, the_plan))
    print(f"plan for a budget of {args.budget:g} points: " +
          (", ".join(f"{k} {v:g}" for k, v in the_plan["ratios"].items() if v > 0) or "nothing can be pruned"))
    return 0


def _cmd_schedule(args) -> int:
    _check_output(args.output, args.model)
    if args.report:
        _check_output(args.report, args.model)
    if not (0.0 <= args.ratio < 1.0) or not (0.0 <= args.target_flops < 1.0):
        raise UsageError("--ratio and --target-flops must be in [0, 1)")
    if args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.mode == "soft" and args.target_flops:
        raise UsageError("--target-flops is for --mode iterative; soft pruning takes --ratio")
    criterion = args.criterion or ("l2" if args.mode == "soft" else "l1")
    scope = args.scope or ("node" if args.mode == "soft" else "tree")
    try:
        ScorePass(criterion=criterion, scope=scope)
        config = TrainConfig(args.epochs, args.lr, args.batch_size, seed=args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    model, external, where = open_model(args.model)
    check_input(model, where)
    if args.mode == "iterative":
        result = schedules.iterative_prune(model, args.data, args.val, args.ratio, args.steps, args.schedule,
                                           config, criterion, scope, args.seed, args.calib,
                                           target_flops=args.target_flops, stream=sys.stderr)
    else:
        result = schedules.soft_filter_prune(model, args.data, args.val, args.ratio, config, criterion, scope,
                                             args.seed, args.calib, stream=sys.stderr)
    report = dict(result.report, schedule={"mode": args.mode, "history": result.history})
    ir.save(result.model, args.output, external & {t.name for t in result.model.graph.initializer})
    if args.report:
        try:
            _write_text_atomic(args.report, json.dumps(report, indent=2, default=str) + "\n")
        except OSError:
            Path(args.output).unlink(missing_ok=True)
            Path(args.output + ".data").unlink(missing_ok=True)
            raise
    for row in result.history:
        print("  " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    print(_summary(result.report))
    soft = result.report.get("soft")
    if soft is not None:
        acc = soft.get("val_acc_pruned")
        print(f"soft pruning: removed channels {'are' if soft['removed_match_last_mask'] else 'are NOT'} the last "
              f"epoch's zeroed filters" + (f"; pruned validation top-1 {acc:.4f}" if acc is not None else ""))
    return 0


def _cmd_demo(args) -> int:
    report = demo.run(args.out_dir)
    print(demo.format_report(report))
    print(f"wrote {args.out_dir}/digits_resnet.onnx, digits_resnet.pruned.onnx, demo-report.json, demo-channels.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"prune": _cmd_prune, "inspect": _cmd_inspect, "finetune": _cmd_finetune,
                "batch": _cmd_batch, "demo": _cmd_demo, "sensitivity": _cmd_sensitivity,
                "schedule": _cmd_schedule}
    try:
        return commands[args.command](args)
    except (UsageError, SpecError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ir.ModelLoadError, PipelineError, PassError, DataError, OSError) as exc:
        if args.debug:
            raise
        print(f"error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug of ours: still one line, the traceback behind --debug
        if args.debug:
            raise
        text = str(exc).strip().splitlines()
        print(f"error: internal error ({type(exc).__name__}: {text[0] if text else ''}); "
              f"rerun with --debug for the traceback", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
