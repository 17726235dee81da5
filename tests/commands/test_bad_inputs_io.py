"""Hostile inputs at the file boundary: photos, model folders, generate's flags, output folders.

Every refusal goes through the CLI (one ``error:`` line, exit 2, nothing written); the conversions
and warnings that let odd photos train are checked on their values.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import stat
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dti.core.devices import resolve_device
from dti.core.errors import DTIError, warn
from dti.core.files import atomic_write_all, check_writable, current_umask, save_image, write_text
from dti.training.data import GRAY_BACKGROUND, SubjectData, check_photos, list_images, load_image, to_rgb
from refusal import assert_refused

# ---------------------------------------------------------------------------------------- helpers


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file whose header claims ``width`` x ``height`` (a decompression bomb's shape)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))
    return path


def png_rgb16(path: Path, array: np.ndarray) -> Path:
    """A 48-bit RGB PNG (PIL writes none), from an [H, W, 3] uint16 array."""
    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))
    return path


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray((torch.rand(size[1], size[0], 3, generator=g) * 255).to(torch.uint8).numpy())


@pytest.fixture()
def train_args(base_args):
    """conftest's base command line."""
    return base_args


def replaced(args, flag, value):
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


# ------------------------------------------------------------------------------- bad photos (train)


def _bomb_81mp(folder: Path) -> str:
    png_claiming(folder / "zz-bomb.png", 9000, 9000)  # over dti's 64 MP, under PIL's own warning limit
    return "zz-bomb.png is 9000x9000 pixels (81 megapixels)"


def _bomb_400mp(folder: Path) -> str:
    png_claiming(folder / "zz-bomb.png", 20000, 20000)  # over PIL's error limit: refused inside Image.open
    return "zz-bomb.png is too large (400 megapixels)"


def _strip(folder: Path) -> str:
    noise((1000, 2)).save(folder / "zz-strip.png")
    return "zz-strip.png is 1000x2 pixels"


def _tall_strip(folder: Path) -> str:
    noise((40, 400)).save(folder / "zz-tall.png")  # 10:1
    return "zz-tall.png is 40x400 pixels (10.0:1)"


def _tiny(folder: Path) -> str:
    noise((6, 6)).save(folder / "zz-tiny.png")
    return "at least 8 px"


def _truncated(folder: Path) -> str:
    noise((64, 64)).save(folder / "zz-cut.png")
    data = (folder / "zz-cut.png").read_bytes()
    (folder / "zz-cut.png").write_bytes(data[: len(data) // 2])
    return "zz-cut.png is not a readable image"


def _only_foreign(folder: Path) -> str:
    for p in folder.iterdir():
        p.unlink()
    for name in ("IMG_1.HEIC", "IMG_2.heic", "raw.dng"):
        (folder / name).write_bytes(b"\x00" * 32)
    return "holds no images dti reads: it holds IMG_1.HEIC, IMG_2.heic, raw.dng"


def _only_subfolders(folder: Path) -> str:
    for p in folder.iterdir():
        p.unlink()
    (folder / "dog").mkdir()
    return "pass the folder that holds the photos themselves"


def _only_text(folder: Path) -> str:
    for p in folder.iterdir():
        p.unlink()
    (folder / "notes.txt").write_text("my dog")
    return "it holds notes.txt; dti reads .jpg"


BAD_PHOTOS = [_bomb_81mp, _bomb_400mp, _strip, _tall_strip, _tiny, _truncated, _only_foreign, _only_subfolders, _only_text]


@pytest.mark.parametrize("make", BAD_PHOTOS, ids=[f.__name__.strip("_") for f in BAD_PHOTOS])
def test_bad_photos_are_refused(make, train_args, photos, capsys, tmp_path):
    fragment = make(photos)
    assert_refused(train_args, capsys, fragment, untouched=[tmp_path / "out", photos])


def test_foreign_formats_are_named_even_with_the_supported_list(photos):
    for p in photos.iterdir():
        p.unlink()
    (photos / "a.heic").write_bytes(b"x")
    with pytest.raises(DTIError) as err:
        list_images(photos)
    assert "HEIC" in str(err.value) and ".png" in str(err.value) and ".gif" in str(err.value)


# --------------------------------------------------------------------------- bad model folders


def _index(text: str):
    def mutate(model: Path) -> None:
        (model / "model_index.json").write_text(text)

    return mutate


def _hints(text: str):
    def mutate(model: Path) -> None:
        (model / "dti.json").write_text(text)

    return mutate


def _remove(name: str):
    def mutate(model: Path) -> None:
        target = model / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return mutate


def _truncate(name: str):
    def mutate(model: Path) -> None:
        (model / name).write_bytes((model / name).read_bytes()[:40])

    return mutate


BAD_MODELS = [
    ("index-list", _index("[]"), "model_index.json holds a list, not a JSON object"),
    ("index-string", _index('"x"'), "model_index.json holds a string"),
    ("index-class-number", _index('{"_class_name": 5}'), "has _class_name 5"),
    ("index-class-list", _index('{"_class_name": ["StableDiffusionPipeline"]}'), "not a pipeline class name"),
    ("index-no-class", _index('{"unet": ["diffusers", "UNet2DConditionModel"]}'), "has no _class_name"),
    ("index-truncated", _index('{"_class_name": "StableDiffusionPipeline", "unet": ["diff'), "model_index.json is not valid JSON"),
    ("index-empty", _index(""), "model_index.json is empty"),
    ("hints-list", _hints("[]"), "dti.json holds a list"),
    ("hints-truncated", _hints('{"templates": '), "dti.json is not valid JSON"),
    ("hints-bad-templates", _hints('{"templates": 5}'), "dti.json: templates must be"),
    ("no-unet", _remove("unet"), "has no unet folder"),
    ("no-tokenizer", _remove("tokenizer"), "has no tokenizer folder"),
    ("no-vocabulary", _remove("tokenizer/tokenizer.json"), "tokenizer holds no tokenizer vocabulary"),
    ("no-unet-weights", _remove("unet/diffusion_pytorch_model.safetensors"), "unet has no weights"),
    ("no-scheduler-config", _remove("scheduler/scheduler_config.json"), "has no scheduler_config.json"),
    ("truncated-text-encoder", _truncate("text_encoder/model.safetensors"), "could not load the pipeline"),
    ("truncated-unet-config", _truncate("unet/config.json"), "could not load the pipeline"),
]


@pytest.mark.parametrize("mutate, fragment", [c[1:] for c in BAD_MODELS], ids=[c[0] for c in BAD_MODELS])
def test_bad_model_folders_are_refused(mutate, fragment, train_args, tiny_sd, capsys, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_sd, model)
    mutate(model)
    assert_refused(replaced(train_args, "--model", model), capsys, fragment, untouched=[tmp_path / "out"])


def test_bad_model_folder_is_refused_by_generate_too(tiny_sd, capsys, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_sd, model)
    _remove("vae")(model)
    out = tmp_path / "gen"
    assert_refused(["generate", "a photo", "--model", model, "--out", out], capsys, "has no vae folder", untouched=[out])


# --------------------------------------------------------------------------- bad generate flags

BAD_GENERATE = [
    (["--resolution", "63"], "--resolution 63"),
    (["--resolution", "0"], "--resolution 0"),
    (["--resolution", "-64"], "--resolution -64"),
    (["--resolution", "100000"], "up to 8192"),
    (["-n", "0"], "-n 0"),
    (["-n", "-2"], "-n -2"),
    (["-n", "100000"], "1 to 256 images"),
    (["--sample-steps", "0"], "--sample-steps 0"),
    (["--sample-steps", "-1"], "--sample-steps -1"),
    (["--sample-steps", "5000"], "1 to 1000 sampler steps"),
    (["--steps", "25"], "dti calls it --sample-steps"),
    (["--guidance", "nan"], "--guidance nan"),
    (["--guidance", "inf"], "--guidance inf"),
    (["--guidance", "-1"], "--guidance -1"),
    (["--seed", "-1"], "--seed -1"),
    (["--device", "gpu"], "--device 'gpu' is not a torch device"),
    (["--device", "cuda:99"], "--device cuda:99"),
    (["--device", "meta"], "--device meta"),
]


@pytest.mark.parametrize("extra, fragment", BAD_GENERATE, ids=[" ".join(c[0]) for c in BAD_GENERATE])
def test_bad_generate_flags_are_refused(extra, fragment, tiny_sd, capsys, tmp_path):
    out = tmp_path / "gen"
    assert_refused(["generate", "a photo", "--model", tiny_sd, "--out", out, *extra], capsys, fragment, untouched=[out])


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
def test_cuda_without_a_gpu_is_refused(tiny_sd, capsys, tmp_path):
    out = tmp_path / "gen"
    line = assert_refused(["generate", "a photo", "--model", tiny_sd, "--out", out, "--device", "cuda"], capsys, "no CUDA GPU", [out])
    assert "--device cpu" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "a photo", "--model", "no-model", "--out", ""],
        ["interpolate", "a.safetensors", "b.safetensors", "--out", ""],
        ["evaluate", "run", "--out", ""],
        ["sweep", "m.toml", "--methods", "dti", "--model", "m", "--out", " "],
        ["train", "photos", "--token", "<a>", "--init", "dog", "--model", "m", "--output", ""],
    ],
    ids=lambda a: a[0],
)
def test_an_empty_output_path_is_refused_not_read_as_the_current_folder(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_refused(argv, capsys, "is empty", untouched=[tmp_path])


def test_generate_flags_are_refused_before_the_model_loads(capsys, tmp_path):
    # the model does not exist: a flag refused first proves nothing was loaded
    out = tmp_path / "gen"
    argv = ["generate", "a photo", "--model", tmp_path / "no-model", "--out", out, "--resolution", "63"]
    assert_refused(argv, capsys, "--resolution 63", untouched=[out])
    argv = ["generate", "a photo", "--model", tmp_path / "no-model", "--out", out, "--guidance", "nan"]
    assert_refused(argv, capsys, "--guidance nan", untouched=[out])


def test_model_specific_resolution_multiple(tiny_sd):
    from dti.models import load_adapter
    from dti.use.generate import check_model_resolution

    adapter = load_adapter(tiny_sd)
    multiple = adapter.resolution_multiple
    check_model_resolution(adapter, 8 * multiple)
    with pytest.raises(DTIError, match=f"must be a multiple of {multiple} for this model"):
        check_model_resolution(adapter, 8 * multiple + 1)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DTIError, match="cuda:99"):
        resolve_device("cuda:99")
    if not torch.cuda.is_available():
        with pytest.raises(DTIError, match="no CUDA GPU is visible to torch; use --device cpu or install a CUDA build of torch"):
            resolve_device("cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(DTIError, match="MPS"):
            resolve_device("mps")


# --------------------------------------------------------------------------- unwritable outputs


def _out_is_file(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "taken").write_text("mine")
    return tmp_path / "taken", "taken is a file, not a folder"


def _out_under_file(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "taken").write_text("mine")
    return tmp_path / "taken" / "sub" / "gen", "which is a file"


def _out_read_only(tmp_path: Path) -> tuple[Path, str]:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(stat.S_IRUSR | stat.S_IXUSR)
    return tmp_path / "ro" / "gen", "is not writable: Permission denied"


def _out_in_sysfs(tmp_path: Path) -> tuple[Path, str]:
    if not sys.platform.startswith("linux") or not Path("/sys/kernel").is_dir():
        pytest.skip("needs Linux sysfs, where no one may create folders")
    return Path("/sys/dti-test-out"), "is not writable"


def _existing_image(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "seed-0000.png").write_bytes(b"old")
    return tmp_path / "gen", "seed-0000.png already exists"


BAD_OUTPUTS = [_out_is_file, _out_under_file, _out_read_only, _out_in_sysfs, _existing_image]


@pytest.mark.parametrize("make", BAD_OUTPUTS, ids=[f.__name__.strip("_") for f in BAD_OUTPUTS])
def test_unwritable_outputs_are_refused_before_the_model_loads(make, capsys, tmp_path):
    out, fragment = make(tmp_path)
    model = tmp_path / "no-model"  # never reached: the output is checked first
    try:
        assert_refused(["generate", "a photo", "--model", model, "--out", out], capsys, fragment, untouched=[tmp_path])
    finally:
        if (tmp_path / "ro").exists():
            (tmp_path / "ro").chmod(stat.S_IRWXU)


def test_full_disk_leaves_no_image_and_keeps_the_old_ones(tiny_sd, capsys, tmp_path, monkeypatch):
    out = tmp_path / "gen"
    argv = ["generate", "a photo", "--model", tiny_sd, "--out", out, "-n", "2", "--sample-steps", "1", "--resolution", "32"]
    real_save = Image.Image.save
    calls = []

    def save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 2:  # the second image: half of it lands, then the disk is full
            Path(fp).write_bytes(b"\x89PNG half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    line = assert_refused(argv, capsys, "No space left on device; free space or choose another --out", untouched=[tmp_path])
    assert "seed-0001.png" in line and not out.exists()  # the folder it had to create is gone too

    monkeypatch.setattr(Image.Image, "save", real_save)
    from dti.commands import main

    assert main([str(a) for a in argv]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls.clear()
    monkeypatch.setattr(Image.Image, "save", save)
    assert_refused([*argv, "--overwrite", "--seed", "0"], capsys, "No space left", untouched=[tmp_path])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier images are intact


# ---------------------------------------------------------------------------- file system rules


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert current_umask() == 0o022
        assert stat.S_IMODE(write_text(tmp_path / "a.json", "{}").stat().st_mode) == 0o644
        assert stat.S_IMODE(save_image(Image.new("RGB", (8, 8)), tmp_path / "a.png").stat().st_mode) == 0o644
        os.umask(0o077)
        assert stat.S_IMODE(write_text(tmp_path / "b.json", "{}").stat().st_mode) == 0o600
        os.umask(0o002)
        assert stat.S_IMODE(write_text(tmp_path / "a.json", "[]").stat().st_mode) == 0o664  # replacing takes the umask too
    finally:
        os.umask(old)


def test_save_image_format_from_suffix_and_pnginfo(tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("prompt", "a dog")
    save_image(Image.new("RGB", (8, 8), "red"), tmp_path / "a.png", pnginfo=info)
    save_image(Image.new("RGB", (8, 8), "red"), tmp_path / "a.jpg", quality=90)
    assert Image.open(tmp_path / "a.png").text["prompt"] == "a dog"
    assert Image.open(tmp_path / "a.jpg").format == "JPEG"
    with pytest.raises(DTIError, match="unknown image suffix"):
        save_image(Image.new("RGB", (8, 8)), tmp_path / "a.xyz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "a.png"]  # no temp files


def test_atomic_write_all_is_all_or_nothing(tmp_path):
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "a.txt").write_text("old")

    def fail(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DTIError, match=r"could not write .*b\.txt: No space left on device"):
        atomic_write_all([(tmp_path / "keep" / "a.txt", lambda t: Path(t).write_text("new")), (tmp_path / "new" / "b.txt", fail)])
    assert (tmp_path / "keep" / "a.txt").read_text() == "old"
    assert sorted(p.name for p in (tmp_path / "keep").iterdir()) == ["a.txt"] and not (tmp_path / "new").exists()


def test_check_writable_leaves_nothing_behind(tmp_path):
    check_writable(tmp_path / "a" / "b" / "c")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(DTIError, match="is a file, not a folder"):
        check_writable(tmp_path / "f")


# ----------------------------------------------------------------- conversions and warnings (values)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    rgb = np.asarray(load_image(tmp_path / "g16.png"))
    assert rgb.shape == (16, 64, 3) and (rgb[..., 0] == rgb[..., 1]).all()
    row = rgb[0, :, 0].astype(int)
    assert not (rgb == 255).all() and row[0] == 0 and row[-1] == 255
    assert (np.diff(row) >= 0).all() and len(set(row.tolist())) > 50  # order kept, levels kept
    assert abs(int(row[32]) - round(ramp[0, 32] / 257)) <= 1


def test_16_bit_rgb_and_float_and_32_bit_images(tmp_path):
    arr = np.zeros((8, 16, 3), np.uint16)
    arr[..., 0] = np.linspace(0, 65535, 16).astype(np.uint16)[None]
    arr[..., 1] = 32896  # 128 * 257
    png_rgb16(tmp_path / "rgb16.png", arr)
    rgb = np.asarray(load_image(tmp_path / "rgb16.png"))
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255 and (np.diff(rgb[0, :, 0].astype(int)) > 0).all()
    assert (rgb[..., 1] == 128).all() and (rgb[..., 2] == 0).all()

    floats = np.tile(np.linspace(0.0, 1.0, 32, dtype=np.float32), (8, 1))
    Image.fromarray(floats, "F").save(tmp_path / "f.tif")
    row = np.asarray(load_image(tmp_path / "f.tif"))[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) > 0).all()

    wide = np.tile(np.linspace(0, 65535, 32).astype(np.int32), (8, 1))
    row = np.asarray(to_rgb(Image.fromarray(wide, "I")))[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) >= 0).all()


def test_transparency_is_composited_on_gray(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:, :8, 3] = 255  # left half opaque, right half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    im = load_image(tmp_path / "cut.png")
    px = np.asarray(im)
    assert im.mode == "RGB" and tuple(px[0, 0]) == (255, 0, 0) and tuple(px[0, 15]) == GRAY_BACKGROUND
    assert im.info.get("dti_transparent")

    opaque = np.full((16, 16, 4), 255, np.uint8)
    Image.fromarray(opaque, "RGBA").save(tmp_path / "opaque.png")
    assert not load_image(tmp_path / "opaque.png").info.get("dti_transparent")

    la = Image.fromarray(np.stack([np.full((16, 16), 200, np.uint8), np.full((16, 16), 0, np.uint8)], -1), "LA")
    assert tuple(np.asarray(to_rgb(la))[0, 0]) == GRAY_BACKGROUND

    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([0, 0, 255, 255, 255, 0] + [0] * 762)
    pal.info["transparency"] = 1
    pal.save(tmp_path / "t.gif")
    gif = load_image(tmp_path / "t.gif")
    assert tuple(np.asarray(gif)[0, 0]) == GRAY_BACKGROUND and gif.info.get("dti_transparent")


def test_gif_bmp_tiff_are_read(tmp_path):
    for name in ("a.gif", "b.bmp", "c.tiff", "d.tif"):
        noise((24, 16)).save(tmp_path / name)
    assert [p.name for p in list_images(tmp_path)] == ["a.gif", "b.bmp", "c.tiff", "d.tif"]
    frames = [Image.new("RGB", (24, 16), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    first = np.asarray(load_image(tmp_path / "a.gif"))
    assert first.shape == (16, 24, 3) and first[0, 0, 0] > 200 and first[0, 0, 2] < 50  # the first frame
    assert load_image(tmp_path / "c.tiff").size == (24, 16)


def test_foreign_photos_next_to_readable_ones_are_skipped_with_one_warning(photos, capsys):
    (photos / "IMG_9.HEIC").write_bytes(b"x")
    assert [p.name for p in list_images(photos)] == ["00.png", "01.png", "02.png", "03.png"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: skipped 1 photo(s)") and "IMG_9.HEIC" in err[0]


def test_check_photos_warnings():
    good = [noise((80, 64), i) for i in range(4)]
    assert check_photos(good, 64) == []
    (line,) = check_photos(good[:1], 64)
    assert line.startswith("1 photo: DTI works best with 3-6")
    assert check_photos(good[:2], 64)[0].startswith("2 photos:")
    small = [*good, noise((40, 30)), noise((50, 60))]
    (line,) = check_photos(small, 64)
    assert "2 of 6 photos are smaller than the training resolution 64 px (smallest 40x30)" in line
    rgba = np.zeros((64, 64, 4), np.uint8)
    mixed = [*good, to_rgb(Image.fromarray(rgba, "RGBA")), to_rgb(Image.fromarray(rgba, "RGBA"))]
    (line,) = check_photos(mixed, 64)
    assert "2 of 6 photos have transparent pixels" in line and "(127, 127, 127)" in line


def test_contact_sheet_cells_are_capped():
    from dti.core.images import grid

    sheet = grid([[noise((1024, 768)), noise((1024, 768))]], row_labels=["p"], col_labels=["a", "b"], max_cell=256)
    assert sheet.height < 300 and sheet.width < 2 * 256 + 300
    assert grid([[noise((32, 32))]], max_cell=256).width >= 96  # small ones are still enlarged


def test_warn_is_one_line_on_stderr(capsys):
    warn("two\nlines  here")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "warning: two lines here\n"


def test_subject_data_converts_and_refuses_shapes():
    rgba = Image.fromarray(np.zeros((64, 64, 4), np.uint8), "RGBA")
    data = SubjectData([rgba, noise((64, 64))], 64, "<t>")
    assert data.pixels[0].shape == (3, 64, 64)
    assert math.isclose(float(data.pixels[0][0, 0, 0]), 127 / 127.5 - 1, abs_tol=1e-6)  # composited gray
    with pytest.raises(DTIError, match="photo 2 is 1000x2 pixels"):
        SubjectData([noise((64, 64)), noise((1000, 2))], 64, "<t>")


def test_decompression_bomb_is_refused_without_decoding(tmp_path):
    png_claiming(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(DTIError, match=r"bomb\.png is too large \(900 megapixels\)"):
        load_image(tmp_path / "bomb.png")
    png_claiming(tmp_path / "big.png", 10000, 7000)
    with pytest.raises(DTIError, match=r"big\.png is 10000x7000 pixels \(70 megapixels\), over dti's limit of 64"):
        load_image(tmp_path / "big.png")


def test_model_index_may_hold_non_ascii_text(tiny_sd, tmp_path):
    from dti.models import read_model_index

    model = tmp_path / "m"
    shutil.copytree(tiny_sd, model)
    index = json.loads((model / "model_index.json").read_text())
    index["_note"] = "grüße"
    (model / "model_index.json").write_text(json.dumps(index, ensure_ascii=False), encoding="utf-8")
    assert read_model_index(model)["_note"] == "grüße"


def test_files_written_together_replace_all_or_none(tmp_path, monkeypatch):
    import os

    from dti.core.files import atomic_write_all

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    b.write_text("old b")
    real = os.replace

    def failing(src, dst):
        if str(dst) == str(b) and str(src).endswith(".tmp"):  # the new b fails; putting the old one back works
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(DTIError, match="No space left"):
        atomic_write_all([(a, lambda t: open(t, "w").write("new a")), (b, lambda t: open(t, "w").write("new b"))])
    monkeypatch.undo()
    assert a.read_text() == "old a" and b.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
    atomic_write_all([(a, lambda t: open(t, "w").write("new a")), (b, lambda t: open(t, "w").write("new b"))])
    assert a.read_text() == "new a" and b.read_text() == "new b" and len(list(tmp_path.iterdir())) == 2
