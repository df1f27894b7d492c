"""The ``onnxpruner`` command line: argparse, subcommands, printing, exit codes.

The only module that prints to a terminal or calls ``sys.exit``. Exit 0 ok, 2 usage (a bad option
or spec), 1 any other failure; one ``error:`` line (the traceback behind ``--debug``); nothing
written at ``-o`` on failure, the input never modified. Every command is a thin shell around the
API: ``pipeline.prune`` / ``pipeline.inspect``, the fine-tuning engine, and the workflows.
"""

from __future__ import annotations

import gc
import os
import signal
import sys


def _interrupted_while_starting(signum, frame):  # nothing is written yet: leave at once, one line
    sys.stderr.write("interrupted\n")
    os._exit(128 + signum)


_CONSOLE = os.path.basename(sys.argv[0]) == "onnxpruner"
if _CONSOLE:  # the console script: Ctrl-C during the imports
    for _sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(_sig) is not signal.SIG_IGN:  # a batch worker ignores Ctrl-C: keep it so
            signal.signal(_sig, _interrupted_while_starting)
    gc.disable()  # the imports make no garbage worth a collection (they made ~120, 50 ms)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import ir  # noqa: E402
from ir import files  # noqa: E402
from passes import progress  # noqa: E402
from passes.base import PassError  # noqa: E402
from passes.finetune import STARTS, DataError, TrainConfig, finetune, is_recovered, start_config  # noqa: E402
from passes.inputs import InputsUsageError, check_given, load_inputs, parse_input_shapes  # noqa: E402
from passes.score import ScorePass  # noqa: E402
from passes.recover import DEFAULT_STEPS  # noqa: E402
from passes.reruns import set_mask_options  # noqa: E402
from passes import runtime  # noqa: E402
from pipeline import (REGISTRY, DumpInstrument, Instrument, Pipeline, PipelineError, SpecError,  # noqa: E402
                      TimingInstrument, build_spec, check_input, inspect, open_model, prune)
from workflows import batch, demo, schedules, sensitivity, show  # noqa: E402
from workflows.show import summary as _summary, trees_to_dot  # noqa: E402,F401 (the names tests use)

if _CONSOLE:  # what the imports built lives as long as the process: later collections skip it
    gc.freeze()
    gc.enable()


def _log_stream():
    """Where a long step's one line per finished item goes: stderr when no bar is drawn there
    and the user did not ask for quiet (a log file keeps them); None under a bar or --quiet."""
    return sys.stderr if progress.mode() == "off" and not progress.quiet() else None


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", _Help)
        super().__init__(*a, **kw)

    def error(self, message):  # one line, exit 2, with a "did you mean" when a name is close
        print(f"error: {message}{_did_you_mean(self, message)}", file=sys.stderr)
        raise SystemExit(2)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default shown (argparse's "(default: X)"), choices in the usage."""

    def _get_help_string(self, action):
        d = action.default
        if d is None or d is False or d == "" or d is argparse.SUPPRESS or not action.option_strings:
            return action.help
        return super()._get_help_string(action)


_ARGV: list[str] = []     # the command line being parsed (for the suggestions)


def _did_you_mean(parser: argparse.ArgumentParser, message: str) -> str:
    import difflib

    top = _parser_cache.get("top")
    commands = _subcommands(top) if top is not None else {}
    if "invalid choice: '" in message:
        word = message.split("invalid choice: '")[1].split("'")[0]
        choices = list(commands) if "argument COMMAND" in message else \
            [c.strip(" '") for c in message.split("(choose from ")[-1].rstrip(")").split(",")]
        close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
        return f" (did you mean {close[0]!r}?)" if close else ""
    if "unrecognized arguments:" in message:
        command = next((a for a in _ARGV if a in commands), None)
        known = list(parser._option_string_actions)
        if command is not None:
            known += list(commands[command]._option_string_actions)
        hints = []
        for word in message.split("unrecognized arguments:")[1].split():
            flag = word.split("=")[0]
            if flag.startswith("-"):
                close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
                if close:
                    hints.append((close[0], flag))
        if len(hints) == 1:
            return f" (did you mean {hints[0][0]}?)"
        return f" (did you mean {', '.join(f'{a} for {b}' for a, b in hints)}?)" if hints else ""
    return ""


def _subcommands(ap: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


_parser_cache: dict[str, argparse.ArgumentParser] = {}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("onnxpruner")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _criteria_help(what: str) -> str:
    from passes.criteria import CRITERIA
    return (f"{what}: {', '.join(sorted(CRITERIA))}, or a plugin's (entry point group "
            f"onnxpruner.criteria)")


def _mask_flags(p: argparse.ArgumentParser) -> None:
    """The mask pass's options as flags, named as in the spec (mask{round-to=8 min-keep=2 ...})."""
    p.add_argument("--round-to", type=int, default=None,
                   help="kept channels rounded up to a multiple of this (spec: mask{round-to}; default: 8 in "
                        "groups wider than 32 channels, else 1; 1: off)")
    p.add_argument("--min-keep", type=int, default=None,
                   help="no group keeps fewer channels (spec: mask{min-keep}; default 1)")
    p.add_argument("--ignore", default="", metavar="NODES",
                   help="comma-separated node names whose output channels are kept (spec: mask{ignore})")
    p.add_argument("--normalize", choices=["max", "sum"], default=None,
                   help="global ranking: each group's scores divided by their max or sum (default max)")
    p.add_argument("--rank", choices=["layer", "global"], default=None,
                   help="per-layer ratio or one global ranking (default: layer; global with a target)")
    p.add_argument("--max-ratio", type=float, default=None,
                   help="global ranking/targets: most of one group removed (default 0.9)")
    p.add_argument("--target-flops", type=float, default=0.0, help="remove this fraction of the FLOPs")
    p.add_argument("--target-params", type=float, default=0.0, help="remove this fraction of the parameters")
    p.add_argument("--calib", help="calibration data for hrank/hrank-star/taylor/recon (and prune's --recover): "
                   ".npz with x (y optional)")


def _train_flags(p: argparse.ArgumentParser, epochs: int, lr_schedule: bool = True) -> None:
    p.add_argument("--epochs", type=int, default=epochs, help="fine-tuning epochs")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    p.add_argument("--batch-size", type=int, default=32, help="training batch size")
    p.add_argument("--loss", default="ce", choices=["ce", "mse"], help="cross-entropy (labels) or mean squared error")
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"], help="the training optimizer")
    if lr_schedule:
        p.add_argument("--schedule", default="cosine", choices=["cosine", "step", "constant"],
                       help="learning-rate schedule over the epochs")
    p.add_argument("--freeze", default="", help="comma-separated initializer or node names kept fixed")
    p.add_argument("--checkpoint", help="a folder: an interrupted fine-tuning resumes from it")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress and no per-epoch/per-job lines on stderr")
    common.add_argument("--progress", choices=["auto", "bar", "json", "off"], default=argparse.SUPPRESS,
                        help="progress on stderr: a bar on a terminal (auto), always a bar, one JSON object "
                             "a line per event for scripts, or nothing (default: auto)")
    ap = _Parser(prog="onnxpruner", parents=[common],
                 description="Structured channel pruning for ONNX models: removes whole channels, proves "
                             "the result computes what the masked original computes, writes a smaller ONNX file.",
                 epilog="`onnxpruner COMMAND --help` shows a command's options.")
    ap.add_argument("--version", action="version", version=f"onnxpruner {_version()}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("prune", parents=[common], help="prune a model",
                       description="Prune a model's channels, prove the result, and print what changed.")
    p.add_argument("model", help="the ONNX model (never modified)")
    p.add_argument("-o", "--output", required=True, help="where the pruned model is written")
    p.add_argument("--ratio", type=float, default=0.5, help="fraction of each group's channels removed")
    p.add_argument("--criterion", default="l1", help=_criteria_help("channel importance"))
    p.add_argument("--scope", default="tree", choices=["tree", "node"],
                   help="score a channel over its whole association tree or its root node alone")
    p.add_argument("--passes", help="a pass spec replacing the default pipeline (see README: spec)")
    p.add_argument("--report", help="write the report JSON here")
    p.add_argument("--plot", help="write a PNG of each group's channels, original vs pruned")
    timing = p.add_mutually_exclusive_group()
    timing.add_argument("--latency", dest="latency", action="store_const", const="on", default="auto",
                        help="time both models with ONNX Runtime (default: only models of at most "
                             f"{show.LATENCY_AUTO_FLOPS / 1e9:g} GFLOPs per run, where it costs little)")
    timing.add_argument("--no-latency", dest="latency", action="store_const", const="off",
                        help="never time the models")
    p.add_argument("--no-verify", action="store_true", help="skip ir.verify after each pass")
    p.add_argument("--time-passes", action="store_true", help="print each pass's time on stderr")
    p.add_argument("--dump-after", default="", help="comma-separated pass names: dump the IR after them")
    p.add_argument("--dump-dir", default="onnxpruner-dumps", help="where --dump-after writes")
    p.add_argument("--seed", type=int, default=0, help="seed of sample inputs and random choices")
    p.add_argument("--ratios", help="a JSON ratio plan: node -> ratio (e.g. from `sensitivity -o`)")
    p.add_argument("--heads", type=float, help="ratio of attention heads removed (default: --ratio)")
    p.add_argument("--stream", type=float, help="ratio of residual-stream channels removed, read by "
                   "normalizations (default: --ratio)")
    p.add_argument("--keep-io", action="store_true", help="never change a graph input's or output's shape "
                   "(a KV cache's past_*/present_* keep their heads)")
    p.add_argument("--gqa", choices=("groups", "queries"), help="grouped-query attention: remove KV groups "
                   "whole (groups, the default) or keep every KV head and remove as many query heads "
                   "from each group (queries)")
    p.add_argument("--recover", nargs="?", const=DEFAULT_STEPS, metavar="STEPS",
                   help=f"after the proof, recover accuracy from --calib (no labels): steps of bias, bn, ls "
                        f"(default {DEFAULT_STEPS}); without --calib nothing is changed")
    _mask_flags(p)
    _input_flags(p)
    s = sub.add_parser("sensitivity", parents=[common], help="accuracy per group at ratios 0.1..0.9, and a ratio plan")
    s.add_argument("model", help="the ONNX classifier")
    s.add_argument("--val", required=True, help="validation data: .npz with x (float32) and y (int64)")
    s.add_argument("-o", "--output", help="write the ratio plan (JSON) for --budget here")
    s.add_argument("--budget", type=float, default=1.0, help="accuracy drop allowed per group, in points")
    s.add_argument("--plot", help="write a PNG plot of accuracy against ratio per group")
    s.add_argument("--criterion", default="l1", help=_criteria_help("channel importance"))
    s.add_argument("--scope", default="tree", choices=["tree", "node"], help="score over the tree or the root node")
    s.add_argument("--calib", help="calibration data for data criteria (.npz)")
    s.add_argument("--steps", type=float, nargs="+", default=None, help="ratios to try (default 0.1 .. 0.9)")
    _input_flags(s)
    s.add_argument("--seed", type=int, default=0, help="seed of sample inputs and random choices")
    sc = sub.add_parser("schedule", parents=[common],
                        help="iterative pruning (prune -> fine-tune, N steps) or soft filter pruning")
    sc.add_argument("model", help="the ONNX classifier")
    sc.add_argument("-o", "--output", required=True, help="where the final model is written")
    sc.add_argument("--mode", default="iterative", choices=["iterative", "soft"], help="the kind of schedule")
    sc.add_argument("--data", required=True, help="training data: .npz with x (float32) and y")
    sc.add_argument("--val", help="validation data (.npz): accuracy per step/epoch")
    sc.add_argument("--ratio", type=float, default=0.5, help="final ratio (iterative: cumulative)")
    sc.add_argument("--target-flops", type=float, default=0.0, help="iterative: final FLOPs reduction instead of a ratio")
    sc.add_argument("--steps", type=int, default=3, help="iterative: prune -> fine-tune rounds")
    sc.add_argument("--growth", default=None, choices=["linear", "agp"],
                    help="iterative: how the cumulative ratio grows over the steps (default linear)")
    sc.add_argument("--schedule", dest="old_growth", default=None, choices=["linear", "agp"],
                    help="deprecated spelling of --growth (in finetune, --schedule is the learning-rate schedule)")
    _train_flags(sc, epochs=2, lr_schedule=False)
    sc.add_argument("--criterion", default=None, help=_criteria_help("default l1 (iterative), l2 (soft)"))
    sc.add_argument("--scope", default=None, choices=["tree", "node"], help="default: tree (iterative), node (soft)")
    sc.add_argument("--calib", help="calibration data for data criteria (.npz)")
    sc.add_argument("--report", help="write the history and the whole run's report (JSON) here")
    _input_flags(sc)
    sc.add_argument("--seed", type=int, default=0, help="seed of sample inputs, batches and random choices")
    i = sub.add_parser("inspect", parents=[common], help="show tags, association trees and groups")
    i.add_argument("model", help="the ONNX model")
    i.add_argument("--json", action="store_true", help="print the analysis as JSON instead of text")
    i.add_argument("--dot", help="write the association trees as Graphviz (roots, leaves, blockers, coupled groups)")
    _input_flags(i)
    f = sub.add_parser("finetune", parents=[common], help="fine-tune a model with ONNX Runtime training")
    f.add_argument("model", help="the ONNX model")
    f.add_argument("--data", required=True, help="training data: .npz with x (float32) and y")
    f.add_argument("--val", help="validation data (.npz); the best epoch on it is kept")
    f.add_argument("-o", "--output", required=True, help="where the fine-tuned model is written")
    _train_flags(f, epochs=3)
    f.add_argument("--force", action="store_true", help="start over even if --checkpoint holds another run")
    f.add_argument("--seed", type=int, default=0, help="seed of the batch order")
    f.add_argument("--start", choices=STARTS, default="auto",
                   help="auto: a model `prune --recover` brought within 0.25 relative output error of the original "
                        "(held-out calibration samples) is fine-tuned as 'recovered' (a tenth of --lr, the start kept "
                        "unless an epoch beats it, chosen on held-out training data); fresh: as given")
    f.add_argument("--keep-start", action="store_true", help="keep the model as given unless an epoch beats it")
    f.add_argument("--holdout", type=float, default=0.0, metavar="F",
                   help="without --val: hold this fraction of --data out of training and keep the epoch "
                        "of the lowest loss on it (default 0: the best training accuracy; 0.1 for a recovered start)")
    b = sub.add_parser("batch", parents=[common], help="prune many models × variants, locally or on Ray")
    b.add_argument("models", nargs="*", help="model files (or use --plan)")
    b.add_argument("--plan", help="a JSON or YAML plan of models and variants")
    b.add_argument("-o", "--output", required=True, help="output folder")
    b.add_argument("--ratio", type=float, nargs="+", default=[0.5], help="ratios (one variant each)")
    b.add_argument("--criterion", nargs="+", default=["l1"], help=_criteria_help("criteria (one variant each)"))
    b.add_argument("--scope", nargs="+", default=["tree"], choices=["tree", "node"], help="scopes (one variant each)")
    _mask_flags(b)
    b.add_argument("--jobs", type=int, default=1, help="jobs run at once (processes or Ray tasks)")
    b.add_argument("--executor", default="local", choices=["local", "ray"], help="where the jobs run")
    b.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
    b.add_argument("--force", action="store_true", help="redo jobs that are already done")
    _input_flags(b, " (every model; a plan's model entry may give its own)")
    d = sub.add_parser("demo", parents=[common],
                       help="digits: train a small residual CNN with ORT, prune at 0.5, fine-tune, report")
    d.add_argument("--out-dir", default="demo-output", help="where the models, report and plot go")
    _parser_cache["top"] = ap
    return ap


def _file_rule(args) -> None:
    """The one rule for every file a command writes (``ir.files``): refused, before any work,
    when it resolves to a file the command reads or to a non-regular file."""
    cmd = args.command
    model = getattr(args, "model", None)
    reads: dict = {"model": files.model_files(model)} if model else {}
    for flag in ("calib", "ratios", "data", "val", "plan", "inputs"):
        if getattr(args, flag, None):
            reads[f"--{flag}"] = getattr(args, flag)
    writes: dict = {}
    if cmd in ("prune", "finetune", "schedule"):
        writes.update(files.model_writes("-o", args.output))
    elif cmd == "sensitivity":
        writes["-o"] = args.output
    for flag in ("report", "dot", "plot"):
        if getattr(args, flag, None):
            writes[f"--{flag}"] = getattr(args, flag)
    if cmd == "prune" and args.dump_after:
        if Path(args.dump_dir).exists() and not Path(args.dump_dir).is_dir():
            raise files.FileRefused(f"--dump-dir {args.dump_dir}: exists and is not a folder")
    if cmd == "demo":  # checked now, not after minutes of training
        if Path(args.out_dir).exists() and not Path(args.out_dir).is_dir():
            raise files.FileRefused(f"--out-dir {args.out_dir}: exists and is not a folder")
        writes = {n: Path(args.out_dir) / n for n in demo.OUTPUTS}
    files.check_writes(writes, reads, new_folders=cmd == "demo")
    if cmd == "finetune" and args.checkpoint:  # the folder's own files must not be inputs either
        ck = Path(args.checkpoint)
        if ck.exists() and not ck.is_dir():
            raise files.FileRefused(f"--checkpoint {ck}: exists and is not a folder")
        files.check_writes({f"--checkpoint {ck}/{n}": ck / n for n in ("progress.json", "checkpoint", "best.npz")},
                           dict(reads, **{k: v for k, v in writes.items() if v}), new_folders=True)


def _input_flags(parser: argparse.ArgumentParser, scope: str = "") -> None:
    """The same words wherever the model runs: the proof's inputs under the user's control."""
    parser.add_argument("--inputs", metavar="FILE.npz",
                        help="arrays by exact input name, fed to every run of the model (shape discovery, "
                             "data criteria, the proof)" + scope)
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME:D1,D2,...",
                        help="fix an input's symbolic dims (repeatable)" + scope)


def _given_inputs(args) -> tuple[dict | None, dict | None]:
    """``--inputs`` and ``--input-shape`` read (a malformed shape is a usage error)."""
    try:
        shapes = parse_input_shapes(args.input_shape) or None
    except InputsUsageError as exc:
        raise UsageError(str(exc)) from None
    given = load_inputs(args.inputs) if args.inputs else None
    return given, shapes



def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


# option -> (what it must be, the test); checked right after parsing, before anything is read
OPTION_RANGES = {
    "ratio": ("in [0, 1)", lambda v: _finite(v) and 0.0 <= v < 1.0),
    "heads": ("in [0, 1)", lambda v: _finite(v) and 0.0 <= v < 1.0),
    "target_flops": ("in [0, 1)", lambda v: _finite(v) and 0.0 <= v < 1.0),
    "target_params": ("in [0, 1)", lambda v: _finite(v) and 0.0 <= v < 1.0),
    "max_ratio": ("in (0, 1]", lambda v: _finite(v) and 0.0 < v <= 1.0),
    "lr": ("a positive finite number", lambda v: _finite(v) and v > 0),
    "budget": ("a non-negative finite number of points", lambda v: _finite(v) and v >= 0),
    "epochs": ("at least 1", lambda v: v >= 1),
    "batch_size": ("at least 1", lambda v: v >= 1),
    "jobs": ("at least 1", lambda v: v >= 1),
    "seed": ("between 0 and 2**32 - 1", lambda v: 0 <= v < 2**32),
}


def _check_options(args) -> None:
    for dest, (what, ok) in OPTION_RANGES.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        for v in value if isinstance(value, list) else [value]:
            if not ok(v):
                raise UsageError(f"--{dest.replace('_', '-')} must be {what}, got {v}")
    steps = getattr(args, "steps", None)
    if isinstance(steps, list):
        bad = [r for r in steps if not (_finite(r) and 0.0 < r < 1.0)]
        if bad:
            raise UsageError(f"--steps must be in (0, 1), got {bad[0]}")
    elif steps is not None and steps < 1:
        raise UsageError(f"--steps must be at least 1, got {steps}")
    if getattr(args, "dump_after", ""):
        unknown = [n for n in args.dump_after.split(",") if n not in REGISTRY]
        if unknown:
            raise UsageError(f"--dump-after: unknown pass {unknown[0]!r}; known passes: {', '.join(sorted(REGISTRY))}")
    if getattr(args, "criterion", None) and args.command in ("prune", "sensitivity", "schedule"):
        try:
            ScorePass(criterion=args.criterion, scope=args.scope or "tree")
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def _cmd_prune(args) -> int:
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
    for path in (args.output, args.report):
        if path and args.inputs and Path(args.inputs).exists() and Path(path).resolve() == Path(args.inputs).resolve():
            raise UsageError(f"{path}: output would overwrite the inputs file")
    given, shapes = _given_inputs(args)
    instruments: list[Instrument] = []
    if args.time_passes:
        instruments.append(TimingInstrument(sys.stderr))
    if args.dump_after:
        instruments.append(DumpInstrument(args.dump_after.split(","), args.dump_dir))
    passes = _with_mask_flags(args, args.passes)
    result = prune(args.model, ratio=args.ratio, criterion=args.criterion, scope=args.scope,
                   passes=passes, verify=not args.no_verify, seed=args.seed,
                   instruments=instruments, calib_data=args.calib, ratios=ratios,
                   target_flops=args.target_flops, target_params=args.target_params,
                   rank=args.rank, max_ratio=args.max_ratio, heads=args.heads, stream=args.stream,
                   sample_inputs=given, input_shapes=shapes, recover=args.recover, keep_io=args.keep_io,
                   gqa=args.gqa)
    runtime.give_back_memory(os.path.getsize(args.model))  # what the passes freed, before the output is serialized (large models)
    if result.report.get("proof") == "not run":
        print("warning: --passes has no validate pass: the result is NOT proven "
              "(report: verified null, proof \"not run\")", file=sys.stderr)
    with files.Staged() as staged:  # model, its data, the report and the plot: all or nothing
        ir.save(result.model, args.output, result.external, staged)
        if args.report:
            staged.write_bytes(args.report, (json.dumps(result.report, indent=2) + "\n").encode())
        if args.plot:
            with open(staged.path_for(args.plot), "wb") as fh:
                show.widths_plot(result.report, fh)
    if show.times_latency(result.report, args.latency):  # ORT runs the original: its weights back in, the arrays let go
        result.original, result.weights = ir.filled(result.original, result.weights), {}
    print(show.prune_screen(args.model, args.output, result.original, result, args.seed, args.latency, given))
    return 0


def _mask_changes(args) -> dict:
    """The mask flags given (spec names, field spelling); absent ones are left to the spec."""
    ignore = tuple(n for n in args.ignore.split(",") if n) or None
    return {"round_to": args.round_to, "min_keep": args.min_keep, "ignore": ignore, "normalize": args.normalize}


def _with_mask_flags(args, spec: str | None) -> str | None:
    """``spec`` (or the default pipeline) with the mask flags set on every mask pass; ``spec``
    unchanged when no mask flag was given."""
    changes = {k: v for k, v in _mask_changes(args).items() if v is not None}
    if not changes:
        return spec
    base = spec or build_spec(args.ratio, args.criterion, args.scope)
    return Pipeline(set_mask_options(Pipeline.parse(base).passes, changes)).spec()


def _cmd_finetune(args) -> int:
    try:
        config = TrainConfig(args.epochs, args.lr, args.batch_size, args.loss, args.optimizer,
                             args.schedule, seed=args.seed, freeze=tuple(n for n in args.freeze.split(",") if n),
                             keep_start=args.keep_start, holdout=args.holdout)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    model, external, where, _ = open_model(args.model)
    check_input(model, where)
    config, kind = start_config(config, args.start, is_recovered(model))
    if kind == "recovered" and not progress.quiet():
        print(f"recovered start: lr {config.lr:g}, the start kept unless an epoch beats it on "
              + ("--val" if args.val else f"the loss of {config.holdout:g} of --data held out"), file=sys.stderr)
    result = finetune(model, args.data, args.val, config, args.checkpoint, restart=args.force)
    if result.stopped:
        print(f"warning: {result.stopped}; wrote the best finite epoch ({result.best_epoch})", file=sys.stderr)
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
    for flag, value in (("--target-flops", args.target_flops), ("--target-params", args.target_params)):
        if not (0.0 <= value < 1.0):
            raise UsageError(f"{flag} must be in [0, 1), got {value}")
    if args.target_flops and args.target_params:
        raise UsageError("give --target-flops or --target-params, not both")
    if args.calib and not Path(args.calib).is_file():
        raise DataError(f"{args.calib}: no such data file")
    mask = {k: v for k, v in dict(_mask_changes(args), rank=args.rank, max_ratio=args.max_ratio,
                                  target_flops=args.target_flops or None,
                                  target_params=args.target_params or None).items() if v is not None}
    if mask.get("target_flops") or mask.get("target_params"):
        mask.setdefault("rank", "global")
    parent = Path(args.output).resolve().parent
    if not parent.is_dir():
        raise UsageError(f"output folder's parent {str(parent)!r} does not exist")
    _given_inputs(args)  # a malformed --input-shape is a usage error before any job runs
    defaults = {"inputs": str(Path(args.inputs).resolve()) if args.inputs else None,
                "input_shape": list(args.input_shape)}
    try:
        if args.plan:
            plan = batch.read_plan(args.plan)
            if mask or args.calib:
                raise UsageError("with --plan, give mask options and --calib in the plan's variants")
            jobs = batch.make_jobs(plan["models"], plan.get("variants", []), defaults)
        else:
            goal = (f"flops{args.target_flops:g}" if args.target_flops else
                    f"params{args.target_params:g}" if args.target_params else None)
            variants = [{"name": f"{c}-{s}-{goal or f'r{r:g}'}", "ratio": r, "criterion": c, "scope": s,
                         "mask": mask, "calib": args.calib}
                        for r in (args.ratio if goal is None else args.ratio[:1])
                        for c in args.criterion for s in args.scope]
            jobs = batch.make_jobs(args.models, variants, defaults)
        batch.check_outputs(jobs, args.output, {"--plan": [args.plan] if args.plan else []})
    except batch.PlanError as exc:
        raise UsageError(str(exc)) from None
    result = batch.run_batch(jobs, args.output, args.executor, args.jobs, args.address, args.force)
    print(Path(result.summary_md).read_text(), end="")
    failed = sum(1 for r in result.rows if r.get("error"))
    print(f"{len(result.rows)} jobs: {len(result.rows) - failed} done, {failed} failed, "
          f"{result.skipped} already done; {result.seconds:.1f} s; summary in {result.summary_csv}")
    return 1 if failed else 0


def _cmd_inspect(args) -> int:
    given, shapes = _given_inputs(args)
    info = inspect(args.model, sample_inputs=given, input_shapes=shapes)
    if args.dot:
        ir.save_bytes(trees_to_dot(info).encode(), args.dot)
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
        state = "prunable" if g["prunable"] else f"left alone: {g['reason']}"
        print(f"  group {g['id']} {g['pattern']} roots={','.join(g['roots'])} "
              f"leaves={','.join(g['leaves']) or '-'} channels={g['channels_before']} {state}")
    return 0


def _cmd_sensitivity(args) -> int:
    steps = tuple(args.steps) if args.steps else sensitivity.STEPS
    model, _, where, _ = open_model(args.model)
    check_input(model, where)
    given, shapes = _given_inputs(args)
    result = sensitivity.analyze(model, args.val, steps, args.criterion, args.scope, args.seed,
                                 args.calib, stream=_log_stream(),
                                 sample_inputs=given, input_shapes=shapes)
    if result.warning:
        print(f"warning: {result.warning}", file=sys.stderr)
    the_plan = sensitivity.plan(result, args.budget)
    with files.Staged() as staged:  # the plan and the plot: both or neither
        if args.plot:
            with open(staged.path_for(args.plot), "wb") as fh:
                sensitivity.plot(result, fh)
        if args.output:
            staged.write_bytes(args.output, (json.dumps(the_plan, indent=2) + "\n").encode())
    print(sensitivity.format_table(result, the_plan))
    print(f"plan for a budget of {args.budget:g} points: " +
          (", ".join(f"{k} {v:g}" for k, v in the_plan["ratios"].items() if v > 0) or "nothing can be pruned"))
    return 0


def _cmd_schedule(args) -> int:
    if args.mode == "soft" and args.target_flops:
        raise UsageError("--target-flops is for --mode iterative; soft pruning takes --ratio")
    if args.old_growth is not None:
        if args.growth is not None and args.growth != args.old_growth:
            raise UsageError("--schedule is the old spelling of --growth: give one of them")
        print("warning: schedule --schedule is deprecated (it meant ratio growth); use --growth",
              file=sys.stderr)
    growth = args.growth or args.old_growth or "linear"
    if args.mode == "soft" and args.checkpoint:
        raise UsageError("--checkpoint is for --mode iterative (soft pruning does not resume)")
    criterion = args.criterion or ("l2" if args.mode == "soft" else "l1")
    scope = args.scope or ("node" if args.mode == "soft" else "tree")
    try:
        ScorePass(criterion=criterion, scope=scope)
        config = TrainConfig(args.epochs, args.lr, args.batch_size, args.loss, args.optimizer, seed=args.seed,
                             freeze=tuple(n for n in args.freeze.split(",") if n))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    model, external, where, _ = open_model(args.model)
    check_input(model, where)
    given, shapes = _given_inputs(args)
    check_given(model, given, shapes, where)
    if args.mode == "iterative":
        result = schedules.iterative_prune(model, args.data, args.val, args.ratio, args.steps, growth,
                                           config, criterion, scope, args.seed, args.calib,
                                           target_flops=args.target_flops, checkpoint=args.checkpoint,
                                           sample_inputs=given, input_shapes=shapes)
    else:
        result = schedules.soft_filter_prune(model, args.data, args.val, args.ratio, config, criterion, scope,
                                             args.seed, args.calib, sample_inputs=given, input_shapes=shapes)
    report = dict(result.report, model=args.model, schedule={"mode": args.mode, "history": result.history})
    with files.Staged() as staged:  # the model, its data and the report: all or nothing
        ir.save(result.model, args.output, external & {t.name for t in result.model.graph.initializer}, staged)
        if args.report:
            staged.write_bytes(args.report, (json.dumps(report, indent=2, default=str) + "\n").encode())
    what = "step" if args.mode == "iterative" else "epoch"
    print(f"{args.model}: {args.mode} schedule, {len(result.history)} {what}s; the summary is the whole run "
          f"(original -> final)")
    for row in result.history:
        print("  " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    print(show.summary(report))
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


def _resume_hint(args) -> str:
    if args.command == "batch":
        return "; run the same command to resume (finished jobs are kept)"
    if args.command == "finetune":
        return ("; run the same command to resume from --checkpoint " + args.checkpoint) if args.checkpoint \
            else "; nothing written (--checkpoint DIR makes a run resumable)"
    return ""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _ARGV[:] = argv
    runtime.FIX_MMAP_THRESHOLD = True  # ONNX Runtime's runs in blocks of their own: the peak stays where the data is
    ap = _parser()
    if not argv:   # a bare `onnxpruner`: what it can do, as a usage error
        ap.print_help(sys.stderr)
        return 2
    args = ap.parse_args(argv)
    debug = getattr(args, "debug", False)
    progress.configure("off" if getattr(args, "quiet", False) else getattr(args, "progress", "auto"))
    if args.command is None:
        ap.print_help(sys.stderr)
        return 2
    commands = {"prune": _cmd_prune, "inspect": _cmd_inspect, "finetune": _cmd_finetune,
                "batch": _cmd_batch, "demo": _cmd_demo, "sensitivity": _cmd_sensitivity,
                "schedule": _cmd_schedule}
    main_thread = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    try:
        if main_thread:
            files.interrupts()
        _check_options(args)
        _file_rule(args)
        return commands[args.command](args)
    except (files.Interrupted, KeyboardInterrupt) as exc:
        files.remove_temporaries()
        if debug:
            raise
        print("interrupted" + _resume_hint(args), file=sys.stderr)
        return exc.exit_code if isinstance(exc, files.Interrupted) else 130
    except (UsageError, SpecError, files.FileRefused) as exc:
        if debug:   # the traceback, and still the usage error's exit code
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ir.ModelLoadError, PipelineError, PassError, DataError, OSError) as exc:
        if debug:
            raise
        print(f"error: {show.error_line(exc, getattr(args, 'model', None))}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug of ours: still one line, the traceback behind --debug
        if debug:
            raise
        text = str(exc).strip().splitlines()
        print(f"error: internal error ({type(exc).__name__}: {text[0] if text else ''}); "
              f"rerun with --debug for the traceback", file=sys.stderr)
        return 1
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
