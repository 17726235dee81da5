import pytest
import torch
from PIL import Image

from dti.core.draws import SampleDraws
from dti.core.errors import DTIError
from dti.text.templates import OBJECT_TEMPLATES
from dti.training.data import LatentCache, SubjectData, list_images, load_image, resize_shorter_side


def test_list_images_ignores_hidden_and_non_images(photos):
    (photos / ".hidden.png").write_bytes(b"x")
    (photos / "notes.txt").write_text("caption")
    assert [p.name for p in list_images(photos)] == ["00.png", "01.png", "02.png", "03.png"]


def test_missing_and_empty_folders_are_refused(tmp_path):
    with pytest.raises(DTIError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DTIError, match="holds no images"):
        list_images(tmp_path / "empty")


def test_unreadable_image_is_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(DTIError, match=r"broken\.jpg is not a readable image"):
        load_image(bad)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)


def test_webp_loads(tmp_path):
    Image.new("RGB", (30, 30), "blue").save(tmp_path / "a.webp")
    assert load_image(tmp_path / "a.webp").size == (30, 30)


def test_resize_shorter_side():
    assert resize_shorter_side(Image.new("RGB", (200, 100)), 64).size == (128, 64)


def test_samples_are_snapped_in_bounds_crops_with_templates(photos):
    data = SubjectData.from_folder(photos, 64, "<t>", snap=8, seed=0)
    seen = set()
    for s in data.batch(range(200)):
        crop = data.crop(s)
        assert crop.shape == (3, 64, 64)
        assert s.top % 8 == 0 and s.left % 8 == 0
        assert s.prompt in {t.format("<t>") for t in OBJECT_TEMPLATES}
        seen.add(s.image)
        assert crop.min() >= -1 and crop.max() <= 1
    assert seen == {0, 1, 2, 3}
    assert data.original_sizes[0] == (64, 80)


def test_every_photo_is_used_once_per_pass(photos):
    data = SubjectData.from_folder(photos, 64, "<t>", seed=3)
    passes = [[s.image for s in data.batch(range(4 * k, 4 * k + 4))] for k in range(3)]
    assert all(sorted(p) == [0, 1, 2, 3] for p in passes)
    assert len({tuple(p) for p in passes}) > 1  # reshuffled between passes


def test_a_sample_is_a_function_of_seed_and_index(photos):
    a = SubjectData.from_folder(photos, 64, "<t>", seed=3)
    b = SubjectData.from_folder(photos, 64, "<t>", seed=3)
    b.batch(range(50))  # what b drew before does not matter
    assert a.batch(range(7, 11)) == b.batch(range(7, 11))
    assert a.batch(range(40)) != SubjectData.from_folder(photos, 64, "<t>", seed=4).batch(range(40))


def test_latent_cache_encodes_each_crop_once(photos):
    data = SubjectData.from_folder(photos, 64, "<t>", seed=0)
    calls = []

    def encode(pixels):
        calls.append(pixels)
        return pixels[:, :1] * 0 + 1.0, torch.full_like(pixels[:, :1], 0.5)

    cache = LatentCache(encode)
    batches = [range(4 * k, 4 * k + 4) for k in range(25)]
    for b in batches:
        lat = cache.sample(data, data.batch(b), SampleDraws(0, b))
        assert lat.shape == (4, 1, 64, 64)
    distinct = {(s.image, s.top, s.left) for b in batches for s in data.batch(b)}
    assert cache.encodes == len(calls) == len(distinct) < 100
    assert abs(float(lat.mean()) - 1.0) < 0.05 and abs(float(lat.std()) - 0.5) < 0.05  # fresh samples from N(1, 0.5)


def _wide(tmp_path, sizes=((160, 64), (64, 64), (64, 100))):
    folder = tmp_path / "wide"
    folder.mkdir(exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        Image.new("RGB", (w, h), (40 * i, 90, 200)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("positions, wide_offsets", [(1, [48]), (2, [0, 96]), (3, [0, 48, 96]), (5, [0, 24, 48, 72, 96])])
def test_crop_positions_are_evenly_spaced_and_the_only_ones_drawn(tmp_path, positions, wide_offsets):
    data = SubjectData.from_folder(_wide(tmp_path), 64, "<t>", snap=8, seed=0, positions=positions)
    assert data.offsets(160) == wide_offsets and data.offsets(64) == [0]
    crops = data.crops()
    assert len(crops) == len(wide_offsets) + 1 + len(data.offsets(100))
    allowed = {(c.image, c.top, c.left) for c in crops}
    drawn = {(s.image, s.top, s.left) for s in data.batch(range(300))}
    assert drawn == allowed  # every fixed crop is used, and nothing else


def test_every_offset_without_positions_and_short_sides_merge(tmp_path):
    data = SubjectData.from_folder(_wide(tmp_path), 64, "<t>", snap=8, seed=0)
    assert data.offsets(160) == list(range(0, 97, 8)) and data.offsets(64) == [0]
    assert {(s.image, s.top, s.left) for s in data.batch(range(2000))} == {(c.image, c.top, c.left) for c in data.crops()}
    few = SubjectData.from_folder(_wide(tmp_path), 64, "<t>", snap=8, positions=8)
    assert few.offsets(80) == [0, 8, 16]  # a side with 3 snapped offsets cannot hold 8 positions


def test_crop_positions_are_refused_out_of_range():
    from dti.training.config import TrainConfig, check

    for bad in (-1, 65):
        with pytest.raises(DTIError, match="crop_positions"):
            check(TrainConfig(photos="p", token="<t>", init="dog", model="m", crop_positions=bad))
