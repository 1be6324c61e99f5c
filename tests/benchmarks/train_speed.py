"""Training and stylising speed, against the machine's own fp32 GEMM peak measured in the same run.

    python tests/benchmarks/train_speed.py [--presets lite paper] [--device auto] [--json]

Prints, per preset: stylise seconds per megapixel at 512x512 and the fraction of GEMM peak it
reaches, training iterations/s, and seconds for a full default-length pair on a real dpst-dev pair
with the trained VGG16 of ../shared/data/lossnet (the loss network used wherever quality matters).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from photostyle import StyleNet, Stylizer, TrainConfig, get_preset, split_net, train_pair
from photostyle.device import resolve_device

log = logging.getLogger("train_speed")
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def gemm_peak_gflops(device: torch.device, n: int = 2048, seconds: float = 2.0) -> float:
    """Best fp32 matmul throughput (TF32 off on CUDA, so it is a true fp32 peak)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    _sync(device)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def model_flops_per_pixel(preset: str, side: int = 256) -> float:
    net = StyleNet(get_preset(preset).net, num_styles=1).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.rand(1, 3, side, side), 0)
    return counter.get_total_flops() / side**2


def stylise_seconds_per_mp(preset: str, device: torch.device, side: int = 512, reps: int = 5) -> float:
    base, styles = split_net(StyleNet(get_preset(preset).net, num_styles=1))
    stylizer = Stylizer(base, styles[0], device=device)
    x = torch.rand(1, 3, side, side)
    stylizer.tensor(x)  # warm-up (allocator, cuDNN autotune)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        stylizer.tensor(x)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best / (side * side / 1e6)


def train_seconds(preset: str, device: torch.device, iterations: int | None, pair: int, data: Path) -> dict[str, float]:
    content = Image.open(data / "dpst-dev" / "content" / f"{pair}.png").convert("RGB")
    style = Image.open(data / "dpst-dev" / "style" / f"{pair}.png").convert("RGB")
    weights = data / "lossnet" / "vgg16-hed-bsds500.safetensors"
    cfg = TrainConfig(preset=preset, iterations=iterations, loss_net="vgg16", loss_weights=str(weights), device=str(device))
    start = time.perf_counter()
    report = train_pair(content, style, cfg).report
    total = time.perf_counter() - start
    return {
        "iterations": report.iterations,
        "iterations_per_s": report.iterations / report.seconds,
        "seconds_per_pair": total,
        "final_total_loss": report.final_losses["total"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["lite", "paper"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--iterations", type=int, default=None, help="override the preset's default")
    parser.add_argument("--pair", type=int, default=1, help="dpst-dev pair to train on")
    parser.add_argument("--skip-train", nargs="*", default=[], help="presets to time stylising only")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = resolve_device(args.device)
    peak = gemm_peak_gflops(device)
    result: dict[str, object] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "gemm_peak_gflops_per_s": round(peak, 1),
        "presets": {},
    }
    for preset in args.presets:
        flops = model_flops_per_pixel(preset)
        s_per_mp = stylise_seconds_per_mp(preset, device)
        row: dict[str, float] = {
            "model_gflop_per_mp": round(flops * 1e6 / 1e9, 2),
            "stylise_s_per_mp_at_512": round(s_per_mp, 4),
            "stylise_fraction_of_gemm_peak": round(flops * 1e6 / s_per_mp / 1e9 / peak, 3),
            "stylise_images_per_s_at_1mp": round(1 / (stylise_seconds_per_mp(preset, device, side=1024) * 1.048576), 2),
        }
        if preset not in args.skip_train:
            row.update({k: round(v, 3) for k, v in train_seconds(preset, device, args.iterations, args.pair, args.data).items()})
        result["presets"][preset] = row  # type: ignore[index]
        log.info("%s: %s", preset, row)
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
