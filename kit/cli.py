"""Command line: demo data, params checks; train, folds, ensemble, search, leaderboard; Kaggle
package and push; predict and serve."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kit import cli_compete
from kit.core.logs import show_logs
from kit.core.project import find_project_root
from kit.core.rundir import FINISHED, resolve_params, run_path
from kit.errors import KitError
from kit.models.backends import BACKENDS, INT8_WEIGHTS

BACKEND_HELP = ("what runs a transformer: auto (default: on a CPU the ONNX files `kit export` "
                "wrote, int8 first, else PyTorch), torch, onnx (fp32) or onnx-int8")


def next_run_name(params_path: str, name: str = "", root: Path | None = None) -> str:
    """The run name for a new invocation: the given or params name, continued if unfinished.

    A finished run is never reused: without an explicit name the next free `<name>-N` is taken
    (and said); an explicit name of a finished run is an error.
    """
    params, root = resolve_params(params_path, name, root=root)
    base = params.name
    if not (run_path(params, root) / FINISHED).exists():
        return base
    if name:
        raise KitError(
            f"Run {name!r} is finished ({run_path(params, root)}); its results are kept. "
            "Pick another --name, or delete that folder to redo it."
        )
    n = 2
    while True:
        candidate = f"{base}-{n}"
        p, _ = resolve_params(params_path, candidate, root=root)
        if not (run_path(p, root) / FINISHED).exists():
            print(f"Run {base!r} is finished; this run is {candidate!r}.", file=sys.stderr)
            return candidate
        n += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="build the offline demo competitions under data/")
    demo.add_argument("slugs", nargs="*", help="demo names (default: all)")
    demo.add_argument("--force", action="store_true", help="rebuild existing folders")
    check = sub.add_parser("check", help="validate params files")
    check.add_argument("params", nargs="+")
    name = sub.add_parser("run-name", help="print the run name a new run of PARAMS takes")
    name.add_argument("params")
    name.add_argument("--name", default="")
    doc = sub.add_parser("params-doc", help="print the README's params table from the schema")
    doc.add_argument("readme", nargs="?", help="rewrite that file's table in place instead")
    _add_serving_commands(sub)
    export = sub.add_parser("export", help="merge a k-fold LoRA run's fold adapters into one "
                            "model, and/or add ONNX copies (fp32, int8) to a run's transformer "
                            "export(s); predict, serve and 05_infer then use them")
    export.add_argument("run", help="the run folder (outputs/<run>) or an export folder")
    export.add_argument("--onnx", action="store_true", help="write model.onnx (fp32)")
    export.add_argument("--int8", action="store_true",
                        help="also model_int8.onnx, dynamic int8 quantization (implies --onnx)")
    export.add_argument("--int8-weights", choices=INT8_WEIGHTS, default="auto",
                        help="auto (default: s8 on a CPU with VNNI, else s7), s7 (signed in 7 "
                        "bits: ORT's U8S8 kernels without AVX2's int16 saturation), u8, s8")
    export.add_argument("--merge-folds", action="store_true",
                        help="a k-fold LoRA run: its fold adapters averaged into one model "
                        "(models/transformer/merged), which predict, serve, 05_infer and "
                        "package then use instead of the k folds")
    export.add_argument("--merge-weights", action="store_true",
                        help="with --merge-folds: fold the merged adapter into 16-bit base "
                        "weights (self-contained; what --onnx needs) instead of an adapter")
    _add_kaggle_commands(sub)
    cli_compete.add_commands(sub)
    args = parser.parse_args(argv)
    show_logs()
    try:
        if args.command == "demo":
            from kit.data.demos import DEMOS, build_demo

            for slug in args.slugs or list(DEMOS):
                print(build_demo(slug, find_project_root() / "data", force=args.force))
        elif args.command == "check":
            for path in args.params:
                params, _ = resolve_params(path)
                print(f"{path}: ok ({params.competition.slug}, models {params.models})")
        elif args.command == "run-name":
            params, root = resolve_params(args.params, next_run_name(args.params, args.name))
            print(params.name)
            print(run_path(params, root))
        elif args.command == "params-doc":
            from kit.config.reference import params_table, update_readme

            if args.readme:
                changed = update_readme(Path(args.readme))
                print(f"{args.readme}: params table {'updated' if changed else 'up to date'}")
            else:
                print(params_table(), end="")
        elif args.command == "export":
            return _export_command(args)
        elif args.command in ("predict", "serve"):
            return _serving_command(args)
        elif args.command in ("package", "push", "pull"):
            return _kaggle_command(args)
        elif args.command == "kaggle-image":
            return _image_command(args)
        elif args.command in cli_compete.COMMANDS:
            return cli_compete.run_command(args)
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _add_kaggle_commands(sub: argparse._SubParsersAction) -> None:
    package = sub.add_parser("package", help="a Kaggle dataset folder for internet-off "
                             "notebooks: wheels, the exported model, params; then send it")
    package.add_argument("run", help="the run folder, e.g. outputs/demo")
    package.add_argument("--out", required=True, help="the dataset folder to write")
    package.add_argument("--dry-run", action="store_true",
                         help="write the folder and print the kaggle command; send nothing")
    package.add_argument("--message", default="", help="version notes for a new version")
    package.add_argument("--image-packages", default=None,
                         help="the target image file (default: kit/kaggle/kaggle_image.txt)")
    package.add_argument("--include-base", action="store_true",
                         help="a LoRA adapter run: copy its base model's weights into the dataset")
    package.add_argument("--build-on-kaggle", action="store_true",
                         help="ship only the kit's wheel; an internet-on builder notebook "
                         "downloads the rest inside the real image, attached to `kit push`'s "
                         "notebook as kernel_sources")
    image = sub.add_parser("kaggle-image", help="show the Kaggle image file wheels are built "
                           "for; --probe replaces it with what a real Kaggle notebook reports")
    image.add_argument("--probe", action="store_true",
                       help="push a tiny internet-on notebook, wait, rewrite the file from its "
                       "output (sys.version, platform tag, pip list --format=freeze)")
    image.add_argument("--dry-run", action="store_true",
                       help="with --probe: write the notebook folder, print the commands")
    image.add_argument("--file", default=None,
                       help="the image file to read or rewrite (default: the shipped one)")
    image.add_argument("--folder", default="kaggle/image-probe",
                       help="where the probe notebook folder is written")
    image.add_argument("--owner", default="", help="your Kaggle username (or KAGGLE_USERNAME)")
    push = sub.add_parser("push", help="bake a notebook with the run's params, push it to "
                          "Kaggle, follow it and fetch its output")
    push.add_argument("run", help="the run folder, e.g. outputs/demo")
    push.add_argument("--out", required=True, help="the notebook folder to write")
    push.add_argument("--dry-run", action="store_true",
                      help="write the folder and print the kaggle commands; send nothing")
    push.add_argument("--notebook", default=None, help="default: kaggle.notebook of the params")
    push.add_argument("--dataset", default=None, metavar="DIR",
                      help="first package the run into DIR (as `kit package`): both folders")
    push.add_argument("--image-packages", default=None,
                      help="with --dataset: the image's package list (as `kit package`)")
    push.add_argument("--include-base", action="store_true",
                      help="with --dataset: copy a LoRA run's base model into the dataset")
    push.add_argument("--submit", action="store_true",
                      help="code competitions: submit the finished version")
    push.add_argument("--poll-seconds", type=float, default=30.0)
    push.add_argument("--continue", dest="resume", action="store_true",
                      help="02_train: the next session, with the previous one's output attached "
                      "(resumes from its latest complete checkpoint)")
    pull = sub.add_parser("pull", help="bring a run trained on Kaggle (push --notebook 02_train) "
                          "back into its run folder")
    pull.add_argument("run", help="the run folder, e.g. outputs/demo")
    push.add_argument("--dataset-wait-minutes", type=float, default=30.0,
                      help="how long to wait for Kaggle to process the dataset before pushing")


def _kaggle_command(args: argparse.Namespace) -> int:
    """`kit package` and `kit push`: print the folder, its contents and the kaggle commands.

    `kit push --dataset DIR` packages the run into DIR first: one command for both folders.
    """
    commands: list[str] = []
    if args.command == "pull":
        from kit.kaggle.remote_train import pull_run

        print(f"pulled: {pull_run(args.run)}")
        return 0
    if args.command == "push" and (args.resume or args.notebook == "02_train"):
        return _push_training(args)
    if args.command == "package" or getattr(args, "dataset", None):
        commands += _package(args)
    if args.command == "push":
        from kit.kaggle.push import push_run

        result = push_run(args.run, args.out, notebook=args.notebook, dry_run=args.dry_run,
                          submit=args.submit, poll_seconds=args.poll_seconds,
                          dataset_folder=args.dataset,
                          dataset_wait_minutes=args.dataset_wait_minutes)
        print(f"notebook {result.ref}: {result.folder}")
        if result.base_model:
            print(result.base_model)
        for path in sorted(result.folder.iterdir()):
            print(f"  {path.stat().st_size / 1e3:10.1f} kB  {path.name}")
        if result.version is not None:
            print(f"version {result.version} (dataset {result.dataset} version "
                  f"{result.dataset_version}): {result.status}; output in {result.output_dir}")
        if result.submission:
            print(f"submission: {result.submission}")
        commands += result.commands
    print("dry run: nothing sent; the commands are:" if args.dry_run else "ran:")
    for command in commands:
        print(f"  {command}")
    return 0


def _export_command(args: argparse.Namespace) -> int:
    """`kit export RUN [--merge-folds [--merge-weights]] [--onnx [--int8]]`: the merged fold
    model, then ONNX files beside each PyTorch export of the run."""
    if not (args.onnx or args.int8 or args.merge_folds):
        raise KitError("`kit export` works on the PyTorch export 02_train wrote; say what to "
                       "add: --merge-folds (one model for a k-fold LoRA run's folds), --onnx "
                       "(fp32) and/or --int8 (dynamic int8, implies --onnx).")
    if args.merge_weights and not args.merge_folds:
        raise KitError("--merge-weights goes with --merge-folds (the merged fold adapter "
                       "folded into the base weights).")
    if args.merge_folds:
        from kit.models.fold_merge import fold_exports, merge_run_folds

        k = len(fold_exports(args.run))
        out = merge_run_folds(args.run, weights=args.merge_weights)
        print(f"{out}: merged {k} fold adapters into one model"
              + (" (weights)" if args.merge_weights else " (adapter)"))
        if not (args.onnx or args.int8):
            return 0
    from kit.models.onnx_export import export_onnx, run_exports

    for folder in run_exports(args.run):
        record = export_onnx(folder, int8=args.int8, int8_weights=args.int8_weights)
        files = [record["fp32"]] + ([record["int8"]] if record["int8"] else [])
        diffs = ", ".join(f"{k.removeprefix('max_abs_diff_')} {v:.2g}" for k, v in record.items()
                          if k.startswith("max_abs_diff_"))
        print(f"{folder}: {' '.join(files)} (largest probability difference to PyTorch: {diffs})")
    return 0


def _image_command(args: argparse.Namespace) -> int:
    """`kit kaggle-image [--probe [--dry-run]]`: what the wheels are built for, or its refresh."""
    from kit.kaggle import image

    path = Path(args.file) if args.file else image.IMAGE_FILE
    if args.probe:
        result = image.probe(args.folder, owner=args.owner, target=path, dry_run=args.dry_run)
        print(f"probe notebook {result.ref}: {result.folder}")
        if result.written:
            print(f"{result.written} rewritten: Python {result.image.python}, "
                  f"{result.image.platform}, {len(result.image.packages)} packages")
        print("dry run: nothing sent; the commands are:" if args.dry_run else "ran:")
        for command in result.commands:
            print(f"  {command}")
        return 0
    found = image.read_image(path)
    print(f"{path}: Python {found.python}, {found.platform}, {len(found.packages)} packages, "
          f"dated {found.date or '(no date)'}")
    for line in found.source:
        print(f"  {line}")
    return 0


def _package(args: argparse.Namespace) -> list[str]:
    """`kit package` (or `kit push --dataset DIR`): write and send the dataset; its commands."""
    from kit.kaggle import wheels
    from kit.kaggle.package import package_run

    out = args.out if args.command == "package" else args.dataset
    packed = package_run(args.run, out, dry_run=args.dry_run,
                         message=getattr(args, "message", ""),
                         image_packages=getattr(args, "image_packages", None)
                         or wheels.IMAGE_PACKAGES,
                         build_on_kaggle=getattr(args, "build_on_kaggle", False),
                         include_base=getattr(args, "include_base", False))
    print(f"dataset {packed.ref}: {packed.folder} ({packed.total_bytes / 1e6:.1f} MB)")
    for name, size in packed.files.items():
        print(f"  {size / 1e6:10.2f} MB  {name}")
    if packed.builder:
        print(f"wheel builder {packed.builder.ref}: {packed.builder.folder}")
    return packed.commands


def _push_training(args: argparse.Namespace) -> int:
    """`kit push RUN --notebook 02_train [--continue]`: one training session on Kaggle."""
    from kit.kaggle.remote_train import push_training

    if args.notebook not in (None, "02_train"):
        raise KitError(f"--continue goes on with training (02_train), not {args.notebook}. Fix: "
                       "drop --notebook, or --continue.")
    commands = _package(args) if args.dataset else []  # the dataset first, as for any push
    session = push_training(args.run, args.out, resume=args.resume, dry_run=args.dry_run,
                            poll_seconds=args.poll_seconds)
    push = session.push
    print(f"notebook {push.ref} (training session {session.session}): {push.folder}")
    if push.version is not None:
        print(f"version {push.version}: {push.status}; output in {session.run_output}")
    print(session.message)
    print("dry run: nothing sent; the commands are:" if args.dry_run else "ran:")
    for command in [*commands, *push.commands]:
        print(f"  {command}")
    return 0


def _add_serving_commands(sub: argparse._SubParsersAction) -> None:
    from kit.serve.settings import BatchingConfig, Limits

    limits, batching = Limits(), BatchingConfig()
    predict = sub.add_parser("predict", help="predict a CSV or JSON-lines file with a run")
    predict.add_argument("run", help="the run folder, e.g. outputs/demo")
    predict.add_argument("--input", required=True, help="CSV or JSON lines with the run's "
                         "text columns (and its id column)")
    predict.add_argument("--output", help="CSV to write (default: <input>.predictions.csv)")
    predict.add_argument("--chunk-rows", type=int, default=10_000, help="rows per chunk")
    predict.add_argument("--device", help="cpu, cuda, cuda:1 (default: CUDA when present)")
    predict.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    serve = sub.add_parser("serve", help="serve a run: REST API and a web page")
    serve.add_argument("run", help="the run folder, e.g. outputs/demo")
    serve.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--token", default=None,
                       help="bearer token required on /predict and /health (or KIT_SERVE_TOKEN)")
    serve.add_argument("--device", help="cpu, cuda, cuda:1 (default: CUDA when present)")
    serve.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    serve.add_argument("--max-texts", type=int, default=limits.max_texts,
                       help="texts per request (more: 413)")
    serve.add_argument("--max-chars", type=int, default=limits.max_chars,
                       help="characters per text (more: 413)")
    serve.add_argument("--max-body-bytes", type=int, default=limits.max_body_bytes,
                       help="request body size (more: 413)")
    serve.add_argument("--no-batching", action="store_true",
                       help="one model call per request instead of micro-batches")
    serve.add_argument("--batch-texts", type=int, default=batching.max_texts,
                       help="texts per micro-batch")
    serve.add_argument("--batch-wait-ms", type=float, default=batching.max_wait_ms,
                       help="how long a micro-batch waits for more requests")
    serve.add_argument("--max-queue", type=int, default=batching.max_queue,
                       help="requests waiting (more: 503)")
    serve.add_argument("--threads", type=int, default=None,
                       help="the model's CPU threads (torch and ONNX Runtime; default: torch's)")
    serve.add_argument("--access-log", action="store_true", help="log every request")


def _serving_command(args: argparse.Namespace) -> int:
    """`kit predict` and `kit serve` (imported here: the other commands stay light)."""
    from kit.core.logs import show_logs

    show_logs()
    if args.command == "predict":
        from kit.serve.predict_file import predict_file
        from kit.serve.predictor import Predictor

        predictor = Predictor.load(args.run, device=args.device, backend=args.backend)
        result = predict_file(predictor, Path(args.input), args.output, args.chunk_rows)
        print(result.output)
        return 0
    from kit.serve.api import serve
    from kit.serve.settings import BatchingConfig, Limits, ServeSettings

    for flag in ("max_texts", "max_chars", "max_body_bytes", "batch_texts", "max_queue",
                 "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise KitError(f"--{flag.replace('_', '-')} is {getattr(args, flag)}; use >= 1.")
    if args.batch_wait_ms < 0:
        raise KitError(f"--batch-wait-ms is {args.batch_wait_ms}; use >= 0.")
    settings = ServeSettings(
        run_folder=Path(args.run).resolve(),
        token=args.token or os.environ.get("KIT_SERVE_TOKEN") or None,
        limits=Limits(args.max_texts, args.max_chars, args.max_body_bytes),
        batching=BatchingConfig(not args.no_batching, args.batch_texts, args.batch_wait_ms,
                                args.max_queue),
        device=args.device,
        backend=args.backend,
        threads=args.threads,
    )
    serve(settings, args.host, args.port, access_log=args.access_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
