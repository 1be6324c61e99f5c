"""How fast ``apply`` is against the best a single process can do, on the same photos and the same
thread budget.

- **bare**: one process, ``torch`` on all ``--threads``: decode -> stylise -> encode, bytes in
  memory to bytes in memory (the least any pipeline must do per photo).
- **pipeline**: ``plan_apply`` + ``run_apply`` on a local Ray of ``--threads`` CPUs (one stylise
  actor per CPU, one torch thread each), from files to files with the manifest commits. Ray is
  started and warmed up (one small run) before timing. Reported twice: end to end (the run's
  wall time, with its actors' start) and marginal (``(n - k) / (t(n) - t(k))`` over a run of n
  and one of k photos: the rate of a long nightly run, where the start is amortised).
- **model GFLOP/s**: convolution FLOPs of one forward (``FlopCounterMode``) x photos / model
  seconds of the bare loop; **GEMM peak**: a large fp32 matmul with the same threads.

Large photos (``--side``, real dpst-dev photos resized) measure throughput; small ones
(``--small-side``) measure the pipeline's own cost per photo: (pipeline - bare) / photos.

    python tests/benchmarks/apply_throughput.py [--preset lite] [--json]
    python tests/benchmarks/apply_throughput.py --device cuda --bare-only --synthetic --side 1154  # ~1 MP, no Ray
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from photostyle import PRESETS, Stylizer, TrainConfig, train_pair
from photostyle.imageio import decode, encode, to_tensor

log = logging.getLogger("apply_throughput")

DPST = Path(__file__).resolve().parents[3] / "shared" / "data" / "dpst-dev"


def real_photos(side: int, count: int) -> list[bytes]:
    """JPEGs of the 20 dpst-dev photos, long side ``side``, cycled to ``count``."""
    sources = [DPST / kind / f"{n}.png" for kind in ("content", "style") for n in range(1, 11)]
    images = []
    for path in sources:
        image = Image.open(path).convert("RGB")
        scale = side / max(image.size)
        images.append(image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS))
    return [_jpeg(images[i % len(images)]) for i in range(count)]


def synthetic_photos(side: int, count: int) -> list[bytes]:
    """Smooth gradients with noise, 4:3, for machines without the dpst-dev photos."""
    rng = np.random.default_rng(0)
    h, w = round(side * 3 / 4), side
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(count):
        base = np.stack([xx / w, yy / h, (xx + yy + i) / (w + h)], axis=-1) * 200
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        out.append(_jpeg(Image.fromarray(pixels)))
    return out


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def gemm_peak_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def forward_flops(stylizer: Stylizer, size: tuple[int, int]) -> int:
    x = torch.rand(1, 3, size[1], size[0], device=stylizer.device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        stylizer.net(x, 0)
    return counter.get_total_flops()


def bare(stylizer: Stylizer, photos: list[bytes], *, stacked: bool = False) -> dict[str, float]:
    """decode -> stylise -> encode; ``stacked`` runs each group of equal-sized photos as one
    batch (the alternative to per-photo that ``apply`` chose against)."""
    stylizer(decode(photos[0]).image)  # warm-up
    model = 0.0
    t0 = time.perf_counter()
    decoded = [decode(data, name=f"photo{i}") for i, data in enumerate(photos)]
    if stacked:
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, photo in enumerate(decoded):
            by_size.setdefault(photo.size, []).append(i)
        results: list[Image.Image] = [None] * len(decoded)
        for indices in by_size.values():
            m0 = time.perf_counter()
            out = stylizer.tensor(torch.stack([to_tensor(decoded[i].image) for i in indices]))
            model += time.perf_counter() - m0
            for j, i in enumerate(indices):
                results[i] = Image.fromarray(out[j].mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    else:
        results = []
        for photo in decoded:
            m0 = time.perf_counter()
            results.append(stylizer(photo.image))
            model += time.perf_counter() - m0
    for image in results:
        encode(image, format="jpeg", quality=92)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "model_seconds": model, "images_per_s": len(photos) / seconds}


def pipeline(pair: Any, photos: list[bytes], workdir: Path, batch_size: int) -> float:
    """Wall seconds of ``apply`` over ``photos`` as files (Ray already running)."""
    from pipeline.apply_job import ApplyOptions, plan_apply, run_apply
    from pipeline.catalog import Catalog
    from pipeline.published import load_style, publish_pair

    store = str(workdir / "store")
    if not Catalog(store).list_styles():
        publish_pair(Catalog(store), "bench", pair, {})
    style = load_style(Catalog(store), "bench")
    runs = sorted(workdir.glob("in-*"))
    inputs = workdir / f"in-{len(runs)}"
    inputs.mkdir()
    for i, data in enumerate(photos):
        (inputs / f"{i:06d}.jpg").write_bytes(data)
    options = ApplyOptions(batch_size=batch_size)
    t0 = time.perf_counter()
    result = run_apply(plan_apply(style, str(inputs), str(workdir / f"out-{len(runs)}"), options), options)
    seconds = time.perf_counter() - t0
    assert result.processed == len(photos) and result.errors == 0, result
    return seconds


def marginal(pair: Any, photos: list[bytes], few: int, workdir: Path, batch_size: int) -> dict[str, float]:
    """End-to-end seconds of a run, and its marginal rate: (n - few) / (t(n) - t(few)), which
    cancels the per-run cost (actor start, planning) that a long run amortises."""
    t_few = pipeline(pair, photos[:few], workdir, batch_size)
    t_all = pipeline(pair, photos, workdir, batch_size)
    return {"seconds": t_all, "images_per_s": len(photos) / t_all, "marginal_images_per_s": (len(photos) - few) / (t_all - t_few)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="thread budget: torch threads (bare), Ray CPUs (pipeline)")
    parser.add_argument("--side", type=int, default=512, help="long side of the throughput photos")
    parser.add_argument("--count", type=int, default=80, help="throughput photos")
    parser.add_argument("--small-side", type=int, default=64, help="long side of the overhead photos")
    parser.add_argument("--small-count", type=int, default=200, help="overhead photos")
    parser.add_argument("--batch-size", type=int, default=8, help="small enough to keep every worker busy")
    parser.add_argument("--preset", default="lite", choices=sorted(PRESETS), help="network preset of the style")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bare-only", action="store_true", help="no Ray (e.g. a GPU box without it)")
    parser.add_argument("--synthetic", action="store_true", help="generated photos instead of dpst-dev")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    make = synthetic_photos if args.synthetic else real_photos
    seed = Image.open(io.BytesIO(make(96, 2)[0])).convert("RGB")
    config = TrainConfig(preset=args.preset, iterations=1, crop=32, loss_net="vgg16", loss_weights="random")
    pair = train_pair(seed, seed.transpose(Image.Transpose.FLIP_LEFT_RIGHT), config)
    stylizer = Stylizer(pair.base, pair.style, device=device)
    big, small = make(args.side, args.count), make(args.small_side, args.small_count)
    sizes = [decode(d).size for d in big]

    report: dict[str, Any] = {"device": str(device), "threads": args.threads, "side": args.side, "photos": args.count}
    report["gemm_peak_gflops_per_s"] = gemm_peak_gflops(device)
    bare_big = bare(stylizer, big)
    pixels = sum(w * h for w, h in sizes)
    flops = forward_flops(stylizer, sizes[0]) / (sizes[0][0] * sizes[0][1]) * pixels
    report["bare_images_per_s"] = bare_big["images_per_s"]
    report["bare_model_fraction"] = bare_big["model_seconds"] / bare_big["seconds"]
    report["model_gflops_per_s"] = flops / bare_big["model_seconds"] / 1e9
    report["bare_stacked_images_per_s"] = bare(stylizer, big, stacked=True)["images_per_s"]
    bare_small = bare(stylizer, small)
    report["bare_small_images_per_s"] = bare_small["images_per_s"]

    if not args.bare_only:
        import ray

        ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False)
        few = args.batch_size * args.threads  # one batch per worker
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            pipeline(pair, small[:few], workdir, args.batch_size)  # warm-up: worker imports, file cache
            piped = marginal(pair, big, few, workdir, args.batch_size)
            piped_small = marginal(pair, small, few, workdir, args.batch_size)
        ray.shutdown()
        report["pipeline_images_per_s"] = piped["marginal_images_per_s"]
        report["pipeline_end_to_end_images_per_s"] = piped["images_per_s"]
        report["pipeline_vs_bare"] = piped["marginal_images_per_s"] / bare_big["images_per_s"]
        bare_ms = 1e3 / bare_small["images_per_s"]
        report["overhead_ms_per_photo_small"] = 1e3 / piped_small["marginal_images_per_s"] - bare_ms
        report["overhead_ms_per_photo_small_end_to_end"] = 1e3 / piped_small["images_per_s"] - bare_ms

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(f"{k:40} {v:.4g}" if isinstance(v, float) else f"{k:40} {v}" for k, v in report.items()))


if __name__ == "__main__":
    main()
