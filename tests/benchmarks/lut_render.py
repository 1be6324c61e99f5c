"""``render="lut"`` against ``guided`` (and the net on every pixel) for a colour-table style.

    python tests/benchmarks/lut_render.py [--iterations N | --untrained] [--repeats N] [--sizes 17 33 65]
        [--memory-side 5657] [--no-memory] [--no-quality] [--json]
    python tests/benchmarks/lut_render.py --dev-store STORE [--sizes 17 33 65] [--json]
    python tests/benchmarks/lut_render.py --dev-store STORE --working-sides 192 256 384 512 [--json]

Trains a lite (colour-table) style on ../shared/data/highres (content.jpg + style.png) with the
trained VGG16 of ../shared/data/lossnet (``--iterations``, the preset's by default; ``--untrained``:
the hand-made young style of tests/test_lut_render.py instead, when training would take too long),
then on content.jpg (3056x2292, 7 MP) measures:

- **end to end** per photo, ``lut`` vs ``guided``: read the file, decode, render, encode (JPEG
  92), write; best of ``--repeats``, with ``lut``'s steps timed separately;
- **peak memory** of that, in a fresh process each, on the photo upscaled to ``--memory-side``
  (24 MP by default): peak RSS, and its growth over the process after loading the style;
- **exactness**: max and mean absolute pixel difference between ``lut`` at each ``--sizes`` and
  the net on every pixel with the same working-side statistics (run in row chunks: with the
  statistics replayed every pixel's result depends on its colour alone);
- **quality**: structure / style_swd / affine_res of ``lut``, ``guided`` and ``full`` (the net on
  every pixel, in tiles that share the whole photo's statistics) (pipeline.quality);
- **.cube fidelity**: the style exported as a ``.cube`` fitted on content.jpg, applied to the ten
  dpst-dev content photos it was not fitted on, vs the net's own ``lut`` render of each: CIEDE2000
  mean and 95th percentile.

With ``--dev-store``, the same questions over the ten dpst-dev pairs' styles ``dpst-1`` ...
``dpst-10`` of a store that ``eval`` trained (``quality_protocol.py --split dev``), each on its own
content photo: quality of ``lut``, ``guided`` and ``full``; ``lut`` against the net on every pixel
at each size; and its ``.cube`` on the other dev content photos 1-10 (told apart by bytes), fitted
on its own content photo or calibrated (``styles export --calibrate``) on contents 11-20.

With ``--dev-store`` and ``--working-sides``, how the side of ``lut``'s statistics pass matters:
quality of ``lut`` at each side next to ``full`` for the ten styles on their own content photos,
for the first three also on highres content.jpg (a 7 MP photo none was trained on; scored at
1024 px), and the pass's time on content.jpg (best of 5).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage.color import deltaE_ciede2000, rgb2lab

from photostyle import Stylizer, TrainConfig, train_pair
from photostyle import lut_render
from photostyle.cube import format_cube, parse_cube
from photostyle.imageio import decode, encode, read, to_image, to_tensor
from photostyle.model import Base, Style
from photostyle.norm import shared_statistics
from pipeline.catalog import Catalog
from pipeline.published import load_style
from pipeline.quality import metrics

log = logging.getLogger("lut_render")
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def end_to_end(stylizer: Stylizer, path: Path, out: Path) -> float:
    """Seconds from the file on disk to the result on disk."""
    start = time.perf_counter()
    photo = decode(path.read_bytes(), name=str(path))
    result = stylizer(photo.image)
    out.write_bytes(encode(result, format="jpeg", quality=92, icc_profile=photo.icc_profile, exif=photo.exif))
    return time.perf_counter() - start


def lut_steps(stylizer: Stylizer, path: Path) -> dict[str, float]:
    """Each step of one ``lut`` photo, in seconds."""
    t = [time.perf_counter()]
    data = path.read_bytes()
    photo = decode(data, name=str(path))
    t.append(time.perf_counter())
    stats = stylizer.photo_statistics(photo.image)
    t.append(time.perf_counter())
    table = lut_render.colour_table(stylizer.net, stats, stylizer.lut_size)
    t.append(time.perf_counter())
    result = lut_render.apply_table(photo.image, table)
    t.append(time.perf_counter())
    encode(result, format="jpeg", quality=92)
    t.append(time.perf_counter())
    names = ["read_decode", "statistics_at_working_side", "grid_through_net", "apply_color3dlut", "encode"]
    return {name: round(b - a, 3) for name, a, b in zip(names, t, t[1:])}


def net_on_every_pixel(stylizer: Stylizer, image: Image.Image, stats, rows: int = 256) -> np.ndarray:
    """The net on every pixel with ``stats`` replayed, ``rows`` rows at a time (exact: with the
    statistics fixed no pixel depends on another)."""
    x = to_tensor(image).unsqueeze(0)
    out = np.empty((image.height, image.width, 3), dtype=np.uint8)
    with torch.inference_mode(), shared_statistics(stylizer.net, stats):
        for top in range(0, image.height, rows):
            chunk = stylizer.net(x[..., top : top + rows, :], 0).clamp(0, 1)
            out[top : top + rows] = np.asarray(to_image(chunk))
    return out


def _peak_rss_mib() -> int:
    """This process's peak RSS (VmHWM: unlike getrusage's ru_maxrss it does not start from the
    parent's peak at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def memory_child(base: str, style: str, render: str, photo: str) -> None:
    """In a fresh process: load, then render ``photo`` end to end once; print peak RSS."""
    stylizer = Stylizer(Base.from_bytes(Path(base).read_bytes()), Style.from_bytes(Path(style).read_bytes()), render=render)
    loaded = _peak_rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        seconds = end_to_end(stylizer, Path(photo), Path(tmp) / "out.jpg")
    peak = _peak_rss_mib()
    print(json.dumps({"peak_rss_mib": peak, "growth_mib": peak - loaded, "seconds": round(seconds, 3)}))


def peak_memory(pair, content: Image.Image, side: int, renders: list[str], workdir: Path) -> dict[str, object]:
    scale = side / max(content.size)
    big = content.resize((round(content.width * scale), round(content.height * scale)), Image.Resampling.BICUBIC)
    photo = workdir / "big.jpg"
    big.save(photo, quality=92)
    (workdir / "base.safetensors").write_bytes(pair.base.to_bytes())
    (workdir / "style.safetensors").write_bytes(pair.style.to_bytes())
    result: dict[str, object] = {"photo": f"{big.width}x{big.height} ({big.width * big.height / 1e6:.1f} MP)"}
    for render in renders:
        args = [sys.executable, __file__, "--memory-child", str(workdir / "base.safetensors"), str(workdir / "style.safetensors"), render, str(photo)]
        done = subprocess.run(args, capture_output=True, text=True, check=True)
        result[render] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def cube_fidelity(pair, content: Image.Image, working_side: int | None) -> dict[str, float]:
    stylizer = Stylizer(pair.base, pair.style, render="lut", working_side=working_side)
    photos = [read(DATA / "dpst-dev" / "content" / f"{n}.png").image for n in range(1, 11)]
    errors = _ciede2000(_fitted_cube(stylizer, [content]), stylizer, photos)
    every = np.concatenate(errors)
    return {
        "mean": round(float(every.mean()), 3),
        "p95": round(float(np.percentile(every, 95)), 3),
        "worst_photo_mean": round(float(max(e.mean() for e in errors)), 3),
    }


def _exactness(stylizer: Stylizer, image: Image.Image, sizes: list[int]) -> dict[int, dict[str, float]]:
    """``lut`` at each size against the net on every pixel with the same working-side statistics."""
    stats = stylizer.photo_statistics(image)
    reference = net_on_every_pixel(stylizer, image, stats).astype(int)
    exactness = {}
    for size in sizes:
        out = np.asarray(lut_render.apply_table(image, lut_render.colour_table(stylizer.net, stats, size))).astype(int)
        diff = np.abs(out - reference)
        exactness[size] = {"max": int(diff.max()), "mean": round(float(diff.mean()), 4), "share_over_2": float((diff.max(-1) > 2).mean())}
    return exactness


def _fitted_cube(stylizer: Stylizer, photos: list[Image.Image]):
    """The ``.cube`` ``styles export`` writes for these calibration photos, read back."""
    small = [stylizer.working_copy(p) for p in photos]
    table = lut_render.fit_table([stylizer.colour_table(p) for p in small], [lut_render.pixel_weights(p, 33) for p in small])
    return parse_cube(format_cube(table, "bench"))


def _ciede2000(cube, stylizer: Stylizer, photos: list[Image.Image]) -> list[np.ndarray]:
    """Per photo, CIEDE2000 of every pixel between the ``.cube`` applied and the net's ``lut`` render."""
    return [deltaE_ciede2000(rgb2lab(np.asarray(lut_render.apply_table(p, cube.table))), rgb2lab(np.asarray(stylizer(p)))).ravel() for p in photos]


def dev_styles(store: str, data: Path, sizes: list[int], working_side: int | None) -> dict[str, object]:
    """The ten dpst-dev styles of ``store``: quality of each render, exactness, ``.cube`` fidelity."""
    catalog = Catalog(store)
    dpst = data / "dpst-dev"
    contents = {n: (dpst / "content" / f"{n}.png").read_bytes() for n in range(1, 21)}
    decoded = {n: decode(b, name=f"content/{n}.png").image for n, b in contents.items()}
    first = {data: n for n, data in reversed(contents.items())}  # each photo once, by its bytes
    calibration = [decoded[n] for n in range(11, 21) if first[contents[n]] == n]
    rows: dict[str, object] = {}
    cube_errors: dict[str, list[np.ndarray]] = {"own_photo": [], "calibrated_on_contents_11_20": []}
    for n in range(1, 11):
        loaded = load_style(catalog, f"dpst-{n}")
        content, style = decoded[n], read(dpst / "style" / f"{n}.png").image
        renders = {r: Stylizer(loaded.base, loaded.style, render=r, working_side=working_side) for r in ("lut", "guided", "full")}
        row: dict[str, object] = {"style": loaded.ref.spec, "photo": f"{content.width}x{content.height}"}
        row["quality"] = {r: {k: round(v, 4) for k, v in metrics(content, style, s(content)).items()} for r, s in renders.items()}
        row["lut_vs_every_pixel_255ths"] = _exactness(renders["lut"], content, sizes)
        others = [decoded[m] for m in range(1, 11) if contents[m] != contents[n]]
        for kind, photos in (("own_photo", [content]), ("calibrated_on_contents_11_20", calibration)):
            errors = _ciede2000(_fitted_cube(renders["lut"], photos), renders["lut"], others)
            cube_errors[kind].extend(errors)
            every = np.concatenate(errors)
            row[f"cube_{kind}_ciede2000"] = {"mean": round(float(every.mean()), 3), "p95": round(float(np.percentile(every, 95)), 3)}
        log.info("dpst-%d: %s", n, json.dumps(row))
        rows[f"dpst-{n}"] = row
    means = {r: {k: round(float(np.mean([row["quality"][r][k] for row in rows.values()])), 4) for k in ("structure", "style_swd", "affine_res")} for r in renders}
    worst = {size: max(row["lut_vs_every_pixel_255ths"][size]["max"] for row in rows.values()) for size in sizes}
    cubes = {kind: {"mean": round(float(np.concatenate(e).mean()), 3), "p95": round(float(np.percentile(np.concatenate(e), 95)), 3)} for kind, e in cube_errors.items()}
    return {"pairs": rows, "mean_quality": means, "worst_max_255ths": worst, "cube_ciede2000_all": cubes, "calibration_photos": len(calibration)}


def working_sides(store: str, data: Path, sides: list[int]) -> dict[str, object]:
    """Quality of ``lut`` with its statistics at each of ``sides`` against ``full``, and the time
    of the statistics pass on the 7 MP photo (see the module docstring)."""
    catalog = Catalog(store)
    dpst, scored = data / "dpst-dev", 1024
    highres = read(data / "highres" / "content.jpg").image
    highres_small = highres.resize((scored, round(scored * highres.height / highres.width)), Image.Resampling.BOX)
    keys = ["full", *map(str, sides)]
    own: dict[str, list[list[float]]] = {k: [] for k in keys}
    unseen: dict[str, list[list[float]]] = {k: [] for k in keys}
    for n in range(1, 11):
        loaded = load_style(catalog, f"dpst-{n}")
        content, style = read(dpst / "content" / f"{n}.png").image, read(dpst / "style" / f"{n}.png").image
        renders = {"full": Stylizer(loaded.base, loaded.style, render="full")}
        renders |= {str(w): Stylizer(loaded.base, loaded.style, render="lut", working_side=w) for w in sides}
        for key, stylizer in renders.items():
            own[key].append(list(metrics(content, style, stylizer(content)).values()))
            if n <= 3:
                out = stylizer(highres).resize(highres_small.size, Image.Resampling.BOX)
                unseen[key].append(list(metrics(highres_small, style, out).values()))
        log.info("dpst-%d: %s", n, {k: [round(x, 3) for x in v[-1]] for k, v in own.items()})
    loaded = load_style(catalog, "dpst-1")
    seconds = {}
    for w in sides:
        stylizer = Stylizer(loaded.base, loaded.style, render="lut", working_side=w)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            stylizer.photo_statistics(highres)
            times.append(time.perf_counter() - start)
        seconds[str(w)] = round(min(times), 4)
    mean = lambda rows: [round(float(x), 4) for x in np.mean(rows, axis=0)]  # noqa: E731
    return {
        "own_pairs_mean": {k: mean(v) for k, v in own.items()},
        "highres_3_styles_mean": {k: mean(v) for k, v in unseen.items()},
        "statistics_pass_s_on_7mp": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--iterations", type=int, default=None, help="training iterations (the lite preset's default)")
    parser.add_argument("--working-side", type=int, default=None, help="default: each render's own (photostyle.stylize.DEFAULT_WORKING_SIDES)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[17, 33, 65])
    parser.add_argument("--memory-side", type=int, default=5657, help="long side of the memory test photo (5657: 24 MP at 4:3)")
    parser.add_argument("--memory-renders", nargs="+", default=["lut"], help="renders whose peak memory is measured")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory test")
    parser.add_argument("--no-quality", action="store_true", help="skip the quality metrics and the .cube fidelity")
    parser.add_argument("--untrained", action="store_true", help="the young hand-made style of the tests, not a trained one")
    parser.add_argument("--memory-child", nargs=4, metavar=("BASE", "STYLE", "RENDER", "PHOTO"), help=argparse.SUPPRESS)
    parser.add_argument("--dev-store", help="a store with eval's dpst-1 ... dpst-10 styles: the ten-pair study instead")
    parser.add_argument("--working-sides", type=int, nargs="+", help="with --dev-store: the working-side study instead")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.dev_store and args.working_sides:
        result = {"cpu": cpu_name(), "threads": torch.get_num_threads(), **working_sides(args.dev_store, args.data, args.working_sides)}
        print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
        return
    if args.dev_store:
        result = {"cpu": cpu_name(), "threads": torch.get_num_threads(), **dev_styles(args.dev_store, args.data, args.sizes, args.working_side)}
        print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
        return
    path = args.data / "highres" / "content.jpg"
    content = read(path).image
    style = read(args.data / "highres" / "style.png").image
    weights = args.data / "lossnet" / "vgg16-hed-bsds500.safetensors"
    start = time.perf_counter()
    if args.untrained:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from tests.test_lut_render import young_style

        pair = argparse.Namespace(**dict(zip(("base", "style"), young_style())))
        trained = "untrained (tests/test_lut_render.py young_style)"
    else:
        pair = train_pair(content, style, TrainConfig(preset="lite", iterations=args.iterations, loss_net="vgg16", loss_weights=str(weights)))
        trained = f"{pair.report.iterations} iterations"
    result: dict[str, object] = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
        "photo": f"{content.width}x{content.height}",
        "style": trained,
        "setup_seconds": round(time.perf_counter() - start, 1),
    }
    if args.memory_only:
        with tempfile.TemporaryDirectory() as tmp:
            result["peak_memory"] = peak_memory(pair, content, args.memory_side, args.memory_renders, Path(tmp))
        print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
        return
    lut = Stylizer(pair.base, pair.style, render="lut", working_side=args.working_side)
    guided = Stylizer(pair.base, pair.style, render="guided", working_side=args.working_side)
    result["working_side"] = {"lut": lut.working_side, "guided": guided.working_side}
    with tempfile.TemporaryDirectory() as tmp:
        for name, stylizer in (("lut", lut), ("guided", guided)):
            times = [end_to_end(stylizer, path, Path(tmp) / f"{name}.jpg") for _ in range(args.repeats)]
            result[f"end_to_end_{name}_s"] = round(min(times), 3)
        result["speedup_lut_over_guided"] = round(result["end_to_end_guided_s"] / result["end_to_end_lut_s"], 2)  # type: ignore[operator]
        result["lut_steps_s"] = lut_steps(lut, path)
        if not args.no_quality:
            full = Stylizer(pair.base, pair.style, render="full")
            renders = (("lut", lut), ("guided", guided), ("full", full))
            result["quality"] = {name: {k: round(v, 4) for k, v in metrics(content, style, s(content)).items()} for name, s in renders}
        result["lut_vs_every_pixel_same_statistics_255ths"] = _exactness(lut, content, args.sizes)
        if not args.no_quality:
            result["cube_fidelity_ciede2000_on_10_dpst_dev_photos"] = cube_fidelity(pair, content, args.working_side)
        result["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
        if not args.no_memory:
            result["peak_memory"] = peak_memory(pair, content, args.memory_side, args.memory_renders, Path(tmp))
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
