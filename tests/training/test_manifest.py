"""dti.training.manifest: a TOML of subjects; every problem one DTIError line, before anything trains.
The packaged DreamBooth manifest against the dataset's own list of subjects and classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dti.core.errors import DTIError
from dti.training.manifest import load_manifest
from dti.training.manifests import PACKAGED, packaged_manifest


@pytest.fixture()
def folders(tmp_path) -> Path:
    for name in ("dog", "cat"):
        (tmp_path / name).mkdir()
    return tmp_path


def write(folder: Path, text: str, name: str = "subjects.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """
[defaults]
steps = 300
kappa = 2e-4
batch-size = 2

[subjects.dog]
photos = "dog"
class = "dog"
kind = "live"
settings = { steps = 50, no-validation = true }

[subjects.teddy]
photos = "cat"
class = "stuffed animal"
kind = "object"
init = "plush"
token = "<my-teddy>"
"""


def test_reads_subjects_in_file_order_with_defaults(folders):
    m = load_manifest(write(folders, GOOD))
    assert m.names() == ["dog", "teddy"]
    dog, teddy = m.subjects
    assert (dog.photos, dog.class_word, dog.kind, dog.init, dog.token) == (folders / "dog", "dog", "live", "dog", "<dog>")
    assert (teddy.photos, teddy.class_word, teddy.init, teddy.token) == (folders / "cat", "stuffed animal", "plush", "<my-teddy>")
    assert m["teddy"] is teddy
    with pytest.raises(KeyError):
        m["cow"]


def test_subject_settings_override_defaults_key_by_key(folders):
    m = load_manifest(write(folders, GOOD))
    # flag names become field names; the subject's steps wins, the defaults' kappa and batch stay
    assert m.settings_for(m["dog"]) == {"steps": 50, "kappa": 2e-4, "batch_size": 2, "validate": False}
    assert m.settings_for(m["teddy"]) == {"steps": 300, "kappa": 2e-4, "batch_size": 2}
    assert m.defaults == {"steps": 300, "kappa": 2e-4, "batch_size": 2}


def test_root_in_file_and_root_argument(folders, tmp_path):
    sub = folders / "manifests"
    sub.mkdir()
    text = 'root = ".."\n[subjects.dog]\nphotos = "dog"\nclass = "dog"\nkind = "live"\n'
    assert load_manifest(write(sub, text)).subjects[0].photos == sub / ".." / "dog"
    other = tmp_path / "elsewhere"
    (other / "dog").mkdir(parents=True)
    assert load_manifest(sub / "subjects.toml", root=other).subjects[0].photos == other / "dog"
    # without the check the folders need not exist (planning a sweep on another machine)
    assert (
        load_manifest(sub / "subjects.toml", root=tmp_path / "nowhere", check_photos=False).subjects[0].photos == tmp_path / "nowhere/dog"
    )


DOG = '[subjects.dog]\nphotos = "dog"\nclass = "dog"\nkind = "live"\n'

BAD = [
    ("missing folder", '[subjects.cow]\nphotos = "cow"\nclass = "cow"\nkind = "live"\n', "photo folder"),
    ("photos is a file", '[subjects.cow]\nphotos = "subjects.toml"\nclass = "cow"\nkind = "live"\n', "is not a folder"),
    ("unknown kind", '[subjects.dog]\nphotos = "dog"\nclass = "dog"\nkind = "animal"\n', "kind 'animal' is unknown"),
    ("missing class", '[subjects.dog]\nphotos = "dog"\nkind = "live"\n', "has no class"),
    ("missing photos", '[subjects.dog]\nclass = "dog"\nkind = "live"\n', "has no photos"),
    ("empty class", '[subjects.dog]\nphotos = "dog"\nclass = " "\nkind = "live"\n', "class must be a non-empty string"),
    ("two-word class, no init", '[subjects.dog]\nphotos = "dog"\nclass = "stuffed animal"\nkind = "object"\n', "not one word"),
    ("duplicate subject", DOG + "\n" + DOG, "lists subject 'dog' twice"),
    (
        "duplicate token",
        DOG + '\n[subjects.cat]\nphotos = "cat"\nclass = "cat"\nkind = "live"\ntoken = "<dog>"\n',
        "both use the token <dog>",
    ),
    ("unknown subject key", DOG + 'colour = "brown"\n', "unknown key 'colour'"),
    ("unknown top key", "steps = 3\n" + DOG, "unknown key 'steps'"),
    ("unknown setting", "[defaults]\nstepz = 3\n" + DOG, "unknown setting 'stepz'"),
    ("bad setting type", '[defaults]\nsteps = "many"\n' + DOG, "'steps'"),
    ("bad subject setting type", DOG + "settings = { resolution = 1.5 }\n", "'resolution'"),
    ("a per-subject field as a setting", '[defaults]\ntoken = "<x>"\n' + DOG, "'token' is set per subject"),
    ("settings not a table", DOG + "settings = 3\n", "must be a table"),
    ("no subjects", "[defaults]\nsteps = 3\n", "lists no subjects"),
    ("subject not a table", "[subjects]\ndog = 3\n", "must be a table"),
    ("bad subject name", '[subjects."-dog"]\nphotos = "dog"\nclass = "dog"\nkind = "live"\n', "a subject name is"),
    ("token with a space", DOG + 'token = "<my dog>"\n', "single word"),
    ("root not a string", "root = 3\n" + DOG, "root must be a folder path"),
    ("not TOML", "this is not = = toml\n[[[", "is not valid TOML"),
    ("JSON, not TOML", '{"subjects": {"dog": {"photos": "dog"}}}', "is not valid TOML"),
]


@pytest.mark.parametrize(("case", "text", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_bad_manifest_is_one_line(folders, case, text, fragment):
    path = write(folders, text)
    with pytest.raises(DTIError) as err:
        load_manifest(path)
    message = str(err.value)
    assert "\n" not in message, message
    assert fragment.lower() in message.lower(), message
    assert str(path) in message, message  # it says which file


def test_unreadable_files_are_one_line(folders):
    with pytest.raises(DTIError, match="does not exist"):
        load_manifest(folders / "missing.toml")
    binary = folders / "photo.toml"
    binary.write_bytes(b"\xff\xd8\xff\xe0 not text")
    with pytest.raises(DTIError, match="cannot read manifest"):
        load_manifest(binary)
    with pytest.raises(DTIError, match="cannot read manifest"):
        load_manifest(folders)  # a folder, not a file


# ---------------------------------------------------------------------- the packaged DreamBooth manifest
def dataset_classes(root: Path) -> dict[str, str]:
    """subject -> class from the dataset's prompts_and_classes.txt (the 'subject_name,class' table)."""
    text = (root / "prompts_and_classes.txt").read_text()
    table = text.split("subject_name,class", 1)[1].split("Prompts", 1)[0]
    return dict(line.split(",", 1) for line in table.strip().splitlines())


def test_dreambooth_manifest_matches_the_dataset(dreambooth):
    m = load_manifest(PACKAGED["dreambooth"], root=dreambooth)  # every photo folder exists
    classes = dataset_classes(dreambooth)
    assert len(classes) == 30
    assert m.names() == list(classes)
    for s in m.subjects:
        assert s.class_word == classes[s.name], s.name
        assert s.photos == dreambooth / s.name
        assert s.kind == ("live" if s.class_word in ("cat", "dog") else "object"), s.name
        assert s.token == f"<{s.name}>"
        assert s.settings == {}
    assert sum(s.kind == "live" for s in m.subjects) == 9  # cat, cat2 and the 7 dogs
    assert m.defaults == {}


def test_dreambooth_inits_are_one_clip_token(clip_tok):
    path = packaged_manifest("dreambooth")
    assert path is not None and path.is_file()
    assert packaged_manifest("nope") is None
    m = load_manifest(path, check_photos=False)
    assert len(m.subjects) == 30
    for s in m.subjects:
        ids = clip_tok(s.init, add_special_tokens=False).input_ids
        assert len(ids) == 1, (s.name, s.init, ids)
        assert (
            s.init == s.class_word or len(s.class_word.split()) > 1 or len(clip_tok(s.class_word, add_special_tokens=False).input_ids) > 1
        )
    assert {s.init for s in m.subjects if s.class_word == "stuffed animal"} == {"plush"}
