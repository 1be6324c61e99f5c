"""Full vs guided rendering of a 7 MP photo: time, speed-up, and both results' quality metrics.

    python tests/benchmarks/guided_render.py [--preset lite] [--working-sides 512 1024] [--iterations N]
        [--repeats N] [--json]

Trains a style (lite by default) on ../shared/data/highres (content.jpg + style.png) with the
trained VGG16 of ../shared/data/lossnet, then renders content.jpg (3056x2292) with
``render="full"`` (the net on every pixel, tiled) and ``render="guided"`` (the net at
``--working-side``, lifted with local affine colour maps), and prints seconds (photo in memory to
photo in memory, best of ``--repeats``, after a warm-up run on CUDA), the speed-up, and
structure / style_swd / affine_res of each.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from PIL import Image

from photostyle import PRESETS, Stylizer, TrainConfig, train_pair
from photostyle.imageio import read, to_image, to_tensor
from pipeline.quality import metrics

log = logging.getLogger("guided_render")
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def render_seconds(stylizer: Stylizer, x: torch.Tensor, repeats: int) -> tuple[float, Image.Image]:
    """Best wall time of ``repeats`` renders (after one untimed run on CUDA: cuDNN autotuning and
    the allocator's first growth are not what a nightly job pays per photo) and the last result."""
    if stylizer.device.type == "cuda":
        to_image(stylizer.tensor(x)[0])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = to_image(stylizer.tensor(x)[0])
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lite", choices=sorted(PRESETS), help="network preset of the style")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--working-sides", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--iterations", type=int, default=None, help="training iterations (the preset's default)")
    parser.add_argument("--repeats", type=int, default=1, help="renders timed per mode (the best counts)")
    parser.add_argument("--save", type=Path, default=None, help="folder to write the rendered photos to")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    content = read(args.data / "highres" / "content.jpg").image
    style = read(args.data / "highres" / "style.png").image
    weights = args.data / "lossnet" / "vgg16-hed-bsds500.safetensors"
    config = TrainConfig(preset=args.preset, iterations=args.iterations, loss_net="vgg16", loss_weights=str(weights))
    pair = train_pair(content, style, config)
    x = to_tensor(content).unsqueeze(0)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result: dict[str, object] = {"photo": f"{content.width}x{content.height}", "device": device, "threads": torch.get_num_threads()}
    renders = [("full", None)] + [("guided", side) for side in args.working_sides]
    for render, side in renders:
        stylizer = Stylizer(pair.base, pair.style, render=render, working_side=side or 1024)
        seconds, out = render_seconds(stylizer, x, args.repeats)
        key = render if side is None else f"guided_{side}"
        result[key] = {"seconds": round(seconds, 3), **{k: round(v, 4) for k, v in metrics(content, style, out).items()}}
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            out.save(args.save / f"{key}.jpg", quality=92)
        log.info("%s: %s", key, result[key])
    full_s = result["full"]["seconds"]  # type: ignore[index]
    for render, side in renders[1:]:
        result[f"speedup_guided_{side}"] = round(full_s / result[f"guided_{side}"]["seconds"], 2)  # type: ignore[index]
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
