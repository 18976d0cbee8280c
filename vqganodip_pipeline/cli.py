"""``vqganodip`` command line: the pipeline without the Dagster UI.

Commands:
    synth     write a synthetic PCBA dataset in the MVTec-AD layout
    demo      run the main job end to end on synthetic PCBA data, in the persistent Dagster
              instance so that the UI shows the results afterwards
    evaluate  materialize the asset graph on a labelled dataset and write its report
    trace     the audit trail of one scored image: shift, file, release, artefact digests, runs
    settings  the settings the Dagster code location resolves from the environment
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _cmd_synth(args: argparse.Namespace) -> int:
    from vqganodip_pipeline.data.synthetic import write_mvtec_dataset

    root = write_mvtec_dataset(
        args.out,
        n_normal=args.normal,
        n_abnormal=args.abnormal,
        size=args.size,
        seed=args.seed,
        n_test_normal=args.test_normal,
    )
    print(f"wrote {args.normal} normal and {args.abnormal} abnormal {args.size}px images to {root}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from vqganodip_pipeline.demo import run_demo

    return run_demo(preset=args.preset, workdir=args.workdir, fresh=args.fresh)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from vqganodip_pipeline.evaluation import EvaluationConfig, run_evaluation

    config = EvaluationConfig(
        dataset=args.dataset,
        layout=args.layout,
        preset=args.preset,
        size=args.size,
        downsampling=args.downsampling,
        engine=args.engine,
        weights=args.weights,
        backbone=args.backbone,
        backbone_weights=args.backbone_weights,
        backbone_layers=args.backbone_layers,
        device=args.device,
        position=args.position,
        steps=args.steps,
        iterations=args.iterations,
        classifiers=tuple(args.classifiers.split(",")) if args.classifiers else None,
        seed=args.seed,
        max_groups=args.max_groups,
        dagster_home=args.dagster_home,
    )
    json_path, html_path, _ = run_evaluation(config, args.out, log=lambda m: print(m, flush=True))
    print(f"wrote {json_path} and {html_path}")
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    import json

    import dagster as dg

    from vqganodip_pipeline.data.fs import s3_options
    from vqganodip_pipeline.defs.lineage import format_trace, trace_image
    from vqganodip_pipeline.defs.storage import StorageLocation

    location = StorageLocation(base_path=args.storage, endpoint_url=args.s3_endpoint or None)
    home = args.dagster_home or os.environ.get("DAGSTER_HOME")
    if not home:
        raise ValueError("no Dagster instance: set DAGSTER_HOME or pass --dagster-home")
    with dg.DagsterInstance.from_config(home) as instance:
        entries = trace_image(
            instance, location, args.image_id, s3_options(args.s3_endpoint or None)
        )
    print(json.dumps(entries, indent=2) if args.json else format_trace(entries))
    return 0


def _cmd_settings(args: argparse.Namespace) -> int:
    from vqganodip_pipeline.defs.settings import describe, settings_from_env

    storage = os.path.abspath(os.environ.get("VQGANODIP_STORAGE", "storage"))
    inbox = os.path.abspath(os.environ.get("VQGANODIP_INBOX", "inbox"))
    print("\n".join(describe(settings_from_env(), storage, inbox)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vqganodip", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write a synthetic PCBA dataset (MVTec-AD layout)")
    synth.add_argument("--out", required=True, help="output folder (must be empty or absent)")
    synth.add_argument("--normal", type=int, default=200, help="number of normal images")
    synth.add_argument("--abnormal", type=int, default=40, help="number of abnormal images")
    synth.add_argument("--size", type=int, default=256, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0, help="random seed")
    synth.add_argument(
        "--test-normal",
        type=int,
        default=None,
        help="normal images placed in test/good (default: min(abnormal, normal // 2))",
    )
    synth.set_defaults(handler=_cmd_synth)

    demo = sub.add_parser("demo", help="run the main job end to end on synthetic PCBA data")
    demo.add_argument(
        "--preset",
        default=os.environ.get("VQGANODIP_PRESET", "demo"),
        help="tiny | demo | paper (default: $VQGANODIP_PRESET, else demo; `make ui` reads the "
        "same variable, so the UI opens the demo's settings)",
    )
    demo.add_argument("--workdir", default=".", help="where inbox/, storage/ live (default: .)")
    demo.add_argument(
        "--fresh", action="store_true", help="regenerate the demo batches even if present"
    )
    demo.set_defaults(handler=_cmd_demo)

    trace = sub.add_parser("trace", help="print the audit trail of one scored image")
    trace.add_argument("image_id", help="content-hash id of the image (a unique prefix works)")
    trace.add_argument(
        "--storage",
        default=os.environ.get("VQGANODIP_STORAGE", "storage"),
        help="asset storage: folder or s3://bucket/prefix (default: $VQGANODIP_STORAGE)",
    )
    trace.add_argument(
        "--s3-endpoint",
        default=os.environ.get("VQGANODIP_S3_ENDPOINT", ""),
        help="S3-compatible endpoint URL (default: $VQGANODIP_S3_ENDPOINT)",
    )
    trace.add_argument(
        "--dagster-home", default="", help="instance folder (default: $DAGSTER_HOME)"
    )
    trace.add_argument("--json", action="store_true", help="print JSON instead of text")
    trace.set_defaults(handler=_cmd_trace)

    settings = sub.add_parser(
        "settings", help="print the settings the code location resolves from the environment"
    )
    settings.set_defaults(handler=_cmd_settings)

    evaluate = sub.add_parser(
        "evaluate", help="run the whole method on a labelled dataset and write a report"
    )
    evaluate.add_argument("--dataset", required=True, help="dataset folder or s3:// URI")
    evaluate.add_argument(
        "--layout",
        default="auto",
        help="mvtec | deeppcb | folders | folder | elpv | auto (default: detected from the folder)",
    )
    evaluate.add_argument("--preset", default="demo", help="tiny | demo | paper")
    evaluate.add_argument("--out", required=True, help="output folder for the report")
    evaluate.add_argument(
        "--size",
        type=int,
        default=None,
        help="working resolution (default: the preset's; evaluate DeepPCB at 640, its native size)",
    )
    evaluate.add_argument(
        "--downsampling",
        type=int,
        default=None,
        help="the VQGAN's downsampling factor f, px per code (default: the preset's, demo 8; "
        "4 reconstructs finer detail)",
    )
    evaluate.add_argument(
        "--engine",
        default="torch",
        help="what runs the VQGAN's reconstructions: torch; onnxruntime or openvino (CPU f32, "
        "1.5-2x faster here); openvino-bf16 (f32 code map, bf16 decoder, about 3x faster on a "
        "CPU with bf16 units). The last three need pip install -e '.[engines]'",
    )
    evaluate.add_argument("--weights", default=None, help="local MobileNetV2 weights file")
    evaluate.add_argument(
        "--backbone",
        default="auto",
        help="auto | mobilenet_v2 | vgg16 | inception_v3 | vqgan_discriminator | vqgan_encoder",
    )
    evaluate.add_argument(
        "--backbone-weights",
        default=None,
        help="local torchvision weights file of vgg16 / inception_v3 (default: --weights)",
    )
    evaluate.add_argument(
        "--backbone-layers",
        default="",
        help="MobileNetV2 feature blocks, comma-separated (default: 3,6; 3,6,10 adds a stride-16 "
        "map: bench/README.md)",
    )
    evaluate.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    evaluate.add_argument(
        "--position",
        default="auto",
        choices=("auto", "fixed", "free"),
        help="is the product at a fixed position in every image? fixed: weighting mask and "
        "per-pixel / per-position statistics; free: none (textures, loose parts, DeepPCB); "
        "auto (default, as the assets): measured on the mask-calibration units",
    )
    evaluate.add_argument("--steps", type=int, default=0, help="VQGAN steps (0: preset's)")
    evaluate.add_argument(
        "--iterations", type=int, default=0, help="search iterations (0: preset's)"
    )
    evaluate.add_argument("--classifiers", default=None, help="comma-separated codes")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument(
        "--max-groups",
        type=int,
        default=None,
        help="evaluate a seeded subset of this many images / DeepPCB pairs (default: all)",
    )
    evaluate.add_argument(
        "--dagster-home",
        default=None,
        help="run in this persistent Dagster instance, so that the UI shows the runs "
        "(default: an ephemeral instance)",
    )
    evaluate.set_defaults(handler=_cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from vqganodip_pipeline.defs.instance import RunInterruptedError

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (RunInterruptedError, KeyboardInterrupt) as exc:
        # SIGTERM between steps arrives as KeyboardInterrupt (Dagster maps it to SIGINT)
        where = f" ({exc})" if str(exc) else ""
        print(
            f"vqganodip {args.command}: interrupted{where}; no further step started, "
            "finished steps' results are stored",
            file=sys.stderr,
        )
        return 130
    except (ValueError, OSError, LookupError) as exc:
        print(f"vqganodip {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
