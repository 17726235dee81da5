"""Bad concept files x commands: every reader refuses them in one line, `dti inspect` shows what is wrong;
outputs are never written over without --overwrite; dti's own file reads right in ComfyUI and A1111;
tokens and trigger words that no prompt could use are refused."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import dti
from conftest import load_pipe
from dti.commands import main
from dti.concepts.concept import FORMAT_NAME, Concept, EncoderVectors
from dti.concepts.formats import planned_paths, read, write
from dti.core import sphere
from dti.core.errors import DTIError
from dti.text.words import check_trigger_word
from refusal import assert_refused, snapshot

WIDTH = 32  # the tiny pipelines' text-encoder width


def good_rows(n=1, width=WIDTH, seed=0):
    return sphere.normalize(torch.randn(n, width, generator=torch.Generator().manual_seed(seed))) * 0.4


def dti_file(path, tensors=None, enc=None, **fields):
    """A dti concept file written by hand, so any of its parts can be broken: ``fields`` replace
    metadata entries (None drops one)."""
    vectors = good_rows(2)
    tensors = {"text_encoder.vectors": vectors, "text_encoder.init": sphere.normalize(vectors)} if tensors is None else tensors
    enc = {"text_encoder": {"magnitude": 0.4, "width": WIDTH, "n_vectors": 2, "kind": "clip_l", "trained": True}} if enc is None else enc
    metadata = {"format": FORMAT_NAME, "format_version": "1", "token": "<bad>", "encoders": json.dumps(enc), "meta": "{}"}
    metadata.update(fields)
    save_file(tensors, path, metadata={k: v for k, v in metadata.items() if v is not None})
    return path


def with_rows(rows):
    """A dti file whose vectors are ``rows`` (the metadata agrees with their shape)."""

    def make(folder):
        shape = list(rows.shape)
        info = {"magnitude": None, "width": shape[-1] if shape else 1, "n_vectors": shape[0] if len(shape) == 2 else 1}
        if len(shape) != 2:
            info = {"magnitude": None}
        return dti_file(folder / "c.safetensors", {"text_encoder.vectors": rows}, {"text_encoder": info})

    return make


def nan_rows():
    rows = good_rows(2)
    rows[1, 3] = float("nan")
    return rows


def inf_rows():
    rows = good_rows(2)
    rows[0, 0] = float("inf")
    return rows


def zero_rows():
    rows = good_rows(2)
    rows[1] = 0
    return rows


def foreign(name, content):
    def make(folder):
        path = folder / name
        if name.endswith(".pt"):
            torch.save(content(), path)
        else:
            save_file(content(), path)
        return path

    return make


def broken_meta(**fields):
    return lambda folder: dti_file(folder / "c.safetensors", **fields)


def broken_tensors(tensors, encoders=None):
    return lambda folder: dti_file(folder / "c.safetensors", tensors(), encoders)


def raw_file(name, data):
    def make(folder):
        (folder / name).write_bytes(data() if callable(data) else data)
        return folder / name

    return make


def foreign_dti_meta(folder):
    """A kohya file dti wrote, whose carried dti metadata was damaged."""
    path = folder / "k.safetensors"
    save_file({"emb_params": good_rows()}, path, metadata={"format": "kohya", "dti_meta": '{"magnitudes": "lots"}'})
    return path


def truncated_pt():
    import io

    buffer = io.BytesIO()
    torch.save({"string_to_param": {"*": good_rows()}, "name": "t"}, buffer)
    return buffer.getvalue()[:300]


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


VECTOR_CASES = [  # (id, file builder, fragment of the refusal): inspect shows these, every other reader refuses them
    ("nan", with_rows(nan_rows()), "row 1 contains NaN"),
    ("inf", with_rows(inf_rows()), "row 0 contains infinite values"),
    ("zero-row", with_rows(zero_rows()), "row 1 is all zeros"),
    ("int64", with_rows(torch.ones(1, WIDTH, dtype=torch.int64)), "holds int64 values"),
    ("bool", with_rows(torch.ones(1, WIDTH, dtype=torch.bool)), "holds bool values"),
    ("no-rows", with_rows(torch.zeros(0, WIDTH)), "has no vectors"),
    ("3-d", with_rows(torch.randn(2, 2, WIDTH)), "is 3-D"),
    ("bad-magnitude", broken_meta(encoders=json.dumps({"text_encoder": {"magnitude": "big"}})), "magnitude 'big'"),
    ("negative-magnitude", broken_meta(encoders=json.dumps({"text_encoder": {"magnitude": -1.0}})), "magnitude -1.0"),
    (
        "init-shape",
        broken_tensors(lambda: {"text_encoder.vectors": good_rows(2), "text_encoder.init": good_rows(1)}),
        "initializer has shape",
    ),
    ("emb_params-nan", foreign("e.safetensors", lambda: {"emb_params": nan_rows()}), "contains NaN"),
    ("diffusers-zero", foreign("learned_embeds.safetensors", lambda: {"<z>": zero_rows()}), "all zeros"),
    ("a1111-inf", foreign("a.pt", lambda: {"string_to_param": {"*": inf_rows()}, "name": "a"}), "infinite"),
    ("foreign-dti_meta", foreign_dti_meta, "magnitudes is not a map"),
    ("sdxl-int", foreign("x.safetensors", lambda: {"clip_l": torch.ones(1, 8, dtype=torch.int32), "clip_g": good_rows(1, 12)}), "int32"),
]

FILE_CASES = [  # damaged files: refused by every command, inspect included (there is nothing to show)
    ("no-encoders-key", broken_meta(encoders=None), "has no 'encoders'"),
    ("encoders-not-json", broken_meta(encoders="{not json"), "not valid JSON"),
    ("encoders-a-list", broken_meta(encoders="[1, 2]"), "is a list, not a dict"),
    ("encoders-empty", broken_meta(encoders="{}"), "lists no encoders"),
    ("entry-a-number", broken_meta(encoders=json.dumps({"text_encoder": 3})), "is a int, not an object"),
    ("tensor-absent", broken_meta(encoders=json.dumps({"text_encoder": {}, "text_encoder_2": {}})), "'text_encoder_2.vectors' is missing"),
    ("width-mismatch", broken_meta(encoders=json.dumps({"text_encoder": {"width": 768}})), "width 768"),
    ("trained-a-string", broken_meta(encoders=json.dumps({"text_encoder": {"trained": "yes"}})), "'trained'"),
    ("kind-a-number", broken_meta(encoders=json.dumps({"text_encoder": {"kind": 7}})), "kind of text_encoder"),
    ("meta-not-json", broken_meta(meta="nope"), "'meta' metadata is not valid JSON"),
    ("meta-a-string", broken_meta(meta='"x"'), "is a str, not a dict"),
    ("no-token", broken_meta(token=None), "names no token"),
    ("newer-format", broken_meta(format_version="9"), "format '9'"),
    ("unlisted-tensor", broken_tensors(lambda: {"text_encoder.vectors": good_rows(2), "extra": good_rows(2)}), "does not list (extra)"),
    ("truncated-pt", raw_file("t.pt", truncated_pt), "is not a readable .pt file"),
    (
        "random-pt",
        raw_file(
            "r.pt", lambda: torch.randint(0, 256, (600,), generator=torch.Generator().manual_seed(3)).to(torch.uint8).numpy().tobytes()
        ),
        "is not a readable .pt file",
    ),
    ("empty-pt", raw_file("e.pt", b""), "it is empty"),
    ("evil-pickle", raw_file("evil.pt", lambda: pickle.dumps({"string_to_param": {"*": _Evil()}})), "calls posix.system (os.system)"),
    ("not-safetensors", raw_file("x.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage"), "not a readable safetensors file"),
]


if os.name != "posix":  # os.system pickles as nt.system on Windows
    FILE_CASES = [c for c in FILE_CASES if c[0] != "evil-pickle"]

ALL_CASES = VECTOR_CASES + FILE_CASES


def commands(bad, good, out, model):
    """The commands that read a concept and must refuse a bad one (inspect is checked apart)."""
    return {
        "convert": ["convert", bad, "--to", "a1111", "--out", out / "x.safetensors"],
        "convert-dti": ["convert", bad, "--to", "dti", "--out", out],
        "rescale": ["rescale", bad, "--out", out / "r.safetensors"],
        "interpolate": ["interpolate", bad, good, "--out", out, "--no-grid"],
        "generate": ["generate", "a <bad>", "--concept", bad, "--model", model, "--out", out],
    }


@pytest.fixture()
def good(tmp_path):
    return Concept("<good>", {"text_encoder": EncoderVectors(good_rows(2, seed=5), 0.4)}, {"method": "dti"}).save(
        tmp_path / "good.safetensors"
    )


@pytest.mark.parametrize("command", ["convert", "convert-dti", "rescale", "interpolate", "generate"])
@pytest.mark.parametrize("case", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_every_command_refuses_a_bad_concept_in_one_line(case, command, tmp_path, good, capsys, tiny_sd):
    _, make, fragment = case
    folder = tmp_path / "in"
    folder.mkdir()
    bad = make(folder)
    out = tmp_path / "out"
    assert_refused(commands(bad, good, out, tiny_sd)[command], capsys, fragment, untouched=[out, folder])


@pytest.mark.parametrize("case", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_every_reader_refuses_a_bad_concept(case, tmp_path):
    _, make, fragment = case
    path = make(tmp_path)
    with pytest.raises(DTIError, match=None) as err:
        read(path)
    assert fragment.lower() in str(err.value).lower() and "\n" not in str(err.value)
    if path.suffix == ".safetensors" and "c.safetensors" == path.name:
        with pytest.raises(DTIError):
            Concept.load(path)


@pytest.mark.parametrize("case", VECTOR_CASES, ids=[c[0] for c in VECTOR_CASES])
def test_inspect_shows_what_is_wrong_with_a_bad_file(case, tmp_path, capsys):
    _, make, fragment = case
    path = make(tmp_path)
    capsys.readouterr()
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "PROBLEMS" in text and fragment.lower() in text.lower(), text
    assert main(["inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))
    assert any(fragment.lower() in p.lower() for p in report["problems"]), report["problems"]


@pytest.mark.parametrize("case", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_inspect_refuses_a_damaged_file_in_one_line(case, tmp_path, capsys):
    _, make, fragment = case
    assert_refused(["inspect", make(tmp_path)], capsys, fragment)


def test_inspect_json_has_no_bare_nan(tmp_path, capsys):
    path = with_rows(nan_rows())(tmp_path)
    capsys.readouterr()
    assert main(["inspect", str(path), "--json"]) == 0
    raw = capsys.readouterr().out
    json.loads(raw, parse_constant=lambda c: pytest.fail(f"bare {c} in {raw}"))
    report = json.loads(raw)
    assert report["encoders"]["text_encoder"]["usable"] is False and "NaN" in report["encoders"]["text_encoder"]["norms"]


@pytest.fixture(scope="module")
def sd_pipe(tiny_sd):
    return load_pipe(tiny_sd)


@pytest.mark.parametrize("case", VECTOR_CASES[:6], ids=[c[0] for c in VECTOR_CASES[:6]])
def test_dti_load_refuses_bad_files_and_bad_concepts(case, tmp_path, sd_pipe):
    _, make, fragment = case
    with pytest.raises(DTIError, match="(?i)" + fragment.split()[-1]):
        dti.load(sd_pipe, make(tmp_path))
    rows = {"nan": nan_rows, "inf": inf_rows, "zero-row": zero_rows}.get(case[0])
    if rows is not None:  # an in-memory Concept is checked too
        with pytest.raises(DTIError, match="(?i)" + fragment.split()[-1]):
            dti.load(sd_pipe, Concept("<m>", {"text_encoder": EncoderVectors(rows())}))
    assert dti.use.loading.loaded_tokens(sd_pipe) == []


# ------------------------------------------------------------------ .pt: damaged vs refused
def test_a_refused_pickle_names_what_it_calls_and_never_runs(tmp_path):
    marker = tmp_path / "ran"

    class Marker:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"string_to_param": {"*": Marker()}}, tmp_path / "zip.pt")  # torch's zip layout
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"string_to_param": {"*": Marker()}}))  # a bare pickle
    for name in ("zip.pt", "plain.pt"):
        with pytest.raises(DTIError, match=r"refused to load .*calls (posix|nt)\.system"):
            read(tmp_path / name)
    assert not marker.exists()


def test_damaged_pt_files_are_called_damaged_not_refused(tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save({"string_to_param": {"*": good_rows(2)}, "name": "l"}, legacy, _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    assert read(legacy).token == "l"
    for name in ("cut.pt",):
        with pytest.raises(DTIError, match=r"is not a readable \.pt file") as err:
            read(tmp_path / name)
        assert "refused" not in str(err.value)


# ------------------------------------------------------------------ tokens, prompts, widths
@pytest.mark.parametrize("token", ["my dog", "", "a\nb", "<a\tb>"])
def test_tokens_that_no_prompt_can_hold_are_refused(token, tmp_path, good, capsys, sd_pipe):
    out = tmp_path / "out"
    assert_refused(["convert", good, "--token", token, "--out", out], capsys, "single word", untouched=[out])
    assert_refused(["interpolate", good, good, "--token", token, "--out", out, "--no-grid"], capsys, "single word", untouched=[out])
    with pytest.raises(DTIError, match="single word"):
        dti.load(sd_pipe, good, token=token)
    assert dti.use.loading.loaded_tokens(sd_pipe) == []


def test_a_file_token_with_spaces_needs_a_token_to_load(tmp_path, sd_pipe, capsys):
    """A .pt whose stored name holds a space (no prompt could type it) is refused as it is read, in
    every verb, until a made-up name is given (defect: such a file was accepted)."""
    path = tmp_path / "ct.pt"
    torch.save({"string_to_param": {"*": good_rows(1)}, "name": "char turner"}, path)
    with pytest.raises(DTIError, match="'char turner', is not one word a prompt could type; pass a made-up word as token"):
        dti.load(sd_pipe, path)
    out = tmp_path / "out"
    assert_refused(["convert", path, "--out", out], capsys, "pass a made-up word as --token", untouched=[out])
    assert main(["convert", str(path), "--token", "<char-turner>", "--out", str(out)]) == 0
    dti.load(sd_pipe, path, token="<char-turner>")
    dti.unload(sd_pipe, "<char-turner>")


def test_interpolate_checks_the_prompt_before_writing(tmp_path, good, capsys):
    out = tmp_path / "out"
    assert_refused(["interpolate", good, good, "--out", out, "--prompt", "a photo"], capsys, "needs {}", untouched=[out])
    assert main(["interpolate", str(good), str(good), "--out", str(out), "--no-grid", "--prompt", "a photo", "--blends", "2"]) == 0


def test_interpolate_writes_strict_json_and_refuses_a_zero_lerp(tmp_path, capsys):
    a = Concept("<a>", {"text_encoder": EncoderVectors(good_rows(1))}, {"method": "ti"})
    b = Concept("<b>", {"text_encoder": EncoderVectors(-good_rows(1))}, {"method": "ti"})
    pa, pb = a.save(tmp_path / "a.safetensors"), b.save(tmp_path / "b.safetensors")
    out = tmp_path / "out"
    assert_refused(
        ["interpolate", pa, pb, "--mode", "lerp", "--blends", "3", "--out", out, "--no-grid"], capsys, "all zeros", untouched=[out]
    )
    assert main(["interpolate", str(pa), str(pa), "--blends", "3", "--out", str(out), "--no-grid"]) == 0
    text = (out / "interpolation.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))


def test_rescale_with_a_model_checks_each_encoder_width(tmp_path, tiny_sd, capsys):
    wide = Concept("<wide>", {"text_encoder": EncoderVectors(good_rows(1, 768), kind="clip_l")}, {"method": "ti"})
    path = wide.save(tmp_path / "wide.safetensors")
    out = tmp_path / "out"
    line = assert_refused(["rescale", path, "--model", tiny_sd, "--out", out / "r.safetensors"], capsys, "width 768", untouched=[out])
    assert "text_encoder" in line and "32" in line


# ------------------------------------------------------------------ outputs are never written over
@pytest.fixture()
def sdxl_run(tmp_path):
    """An SDXL run folder's concept, and a user's file, that an SD conversion must not replace."""
    run = tmp_path / "run"
    xl = Concept("<xl>", {"text_encoder": EncoderVectors(good_rows(1)), "text_encoder_2": EncoderVectors(good_rows(1, 48))}, {})
    xl.save(run / "concept.safetensors")
    (run / "d.safetensors").write_bytes(b"the user's own file")
    return run


@pytest.mark.parametrize(
    "argv",
    [
        ["convert", "{sd}", "--to", "dti", "--out", "{run}"],
        ["convert", "{sd}", "--to", "a1111", "--out", "{run}/d.safetensors"],
        ["convert", "{sd}", "--to", "kohya", "--out", "{run}/d.safetensors"],
        ["rescale", "{sd}", "--out", "{run}/d.safetensors"],
        ["rescale", "{sd}", "--to", "dti", "--out", "{run}"],
        ["rescale", "{sd}", "--out", "{run}/d.safetensors", "--model", "{run}/no-such-model"],  # refused before any model loads
    ],
)
def test_existing_outputs_are_refused_without_overwrite(argv, tmp_path, sdxl_run, good, capsys):
    argv = [a.format(sd=good, run=sdxl_run) for a in argv]
    assert_refused(argv, capsys, "already exists; pass --overwrite", untouched=[sdxl_run])


def test_overwrite_replaces_and_a_diffusers_folder_loses_its_stale_encoder(tmp_path, sdxl_run, good, capsys):
    xl = read(sdxl_run)
    folder = tmp_path / "diffusers"
    write(xl, "diffusers", folder)
    assert sorted(p.name for p in folder.iterdir()) == ["learned_embeds.safetensors", "learned_embeds_2.safetensors"]
    assert_refused(["convert", good, "--to", "diffusers", "--out", folder], capsys, "already exists", untouched=[folder])
    assert main(["convert", str(good), "--to", "diffusers", "--out", str(folder), "--overwrite"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["learned_embeds.safetensors"]  # no SDXL leftover beside the SD file
    assert list(read(folder).encoders) == ["text_encoder"]
    assert main(["convert", str(good), "--to", "dti", "--out", str(sdxl_run), "--overwrite"]) == 0
    assert read(sdxl_run).token == "<good>"


def test_a_failed_overwrite_leaves_the_old_output_whole(tmp_path, monkeypatch):
    import dti.concepts.formats.base as formats  # where the formats write safetensors files

    xl = Concept("<xl>", {"text_encoder": EncoderVectors(good_rows(1)), "text_encoder_2": EncoderVectors(good_rows(1, 48))}, {})
    folder = tmp_path / "d"
    write(xl, "diffusers", folder)
    before = snapshot(folder)
    calls = []
    real = formats.save_file

    def second_fails(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(tensors, path, metadata=metadata)

    monkeypatch.setattr(formats, "save_file", second_fails)
    other = Concept("<o>", {n: EncoderVectors(good_rows(1, e.width, seed=9)) for n, e in xl.encoders.items()}, {})
    with pytest.raises(DTIError, match="No space left"):
        write(other, "diffusers", folder, overwrite=True)
    assert snapshot(folder) == before and read(folder).token == "<xl>"


def test_planned_paths_match_what_write_writes(tmp_path):
    xl = Concept("<xl>", {"text_encoder": EncoderVectors(good_rows(1)), "text_encoder_2": EncoderVectors(good_rows(1, 48))}, {})
    for fmt, out in [("dti", "a"), ("dti", "b.safetensors"), ("diffusers", "c"), ("comfyui", "e"), ("kohya", "f.safetensors")]:
        planned = planned_paths(xl, fmt, tmp_path / out)
        assert write(xl, fmt, tmp_path / out, overwrite=False) == planned and all(p.is_file() for p in planned)
        with pytest.raises(DTIError, match="already exists"):
            write(xl, fmt, tmp_path / out, overwrite=False)


# ------------------------------------------------------------------ dti's own file in ComfyUI and A1111
def first_tensor_names(path):
    """ComfyUI's ``load_file`` dict in the order it iterates (file order), and safe_open's key order."""
    with safe_open(str(path), framework="pt") as f:
        return next(iter(load_file(str(path)))), next(iter(f.keys()))


def test_an_sd_concept_file_reads_as_its_trained_vectors_in_comfyui(tmp_path, photos, tiny_sd):
    """ComfyUI, SD 1.x/2.x: the encoder's embedding_key (clip_l / clip_h) is absent, so it takes the
    first tensor, which must be the trained rows, not ``text_encoder.init``."""
    concept = dti.train(photos, "<toy-thing>", "dog", tiny_sd, tmp_path / "run", steps=2, resolution=64, validate=False, progress=False)
    path = tmp_path / "run" / "concept.safetensors"
    state = load_file(str(path))
    trained = concept.encoders["text_encoder"].vectors
    assert "text_encoder.init" in state and not torch.equal(state["text_encoder.init"], trained)
    assert "clip_l" not in state and "clip_h" not in state  # so ComfyUI falls back to the first tensor
    by_order, by_keys = first_tensor_names(path)
    assert torch.equal(state[by_order], trained) and torch.equal(state[by_keys], trained)
    assert len(state) > 1 and "string_to_param" not in state and not {"clip_g", "clip_l"} <= set(state)  # A1111 refuses it
    back = Concept.load(path)
    assert torch.equal(back.encoders["text_encoder"].vectors, trained) and list(back.encoders) == ["text_encoder"]


def test_an_sdxl_concept_file_reads_by_key_in_comfyui_and_a1111(tmp_path):
    """ComfyUI, SDXL (and A1111's clip_g + clip_l branch): each encoder takes its key."""
    init_l, init_g = sphere.normalize(torch.randn(2, 768)), sphere.normalize(torch.randn(2, 1280))
    concept = Concept(
        "<my-dog>",
        {
            "text_encoder": EncoderVectors(good_rows(2, 768, 1), 0.387, init_l, kind="clip_l"),
            "text_encoder_2": EncoderVectors(good_rows(2, 1280, 2), 0.452, init_g, kind="clip_g"),
        },
        {"method": "dti"},
    )
    path = concept.save(tmp_path / "concept.safetensors")
    state = load_file(str(path))
    assert torch.equal(state["clip_l"], concept.encoders["text_encoder"].vectors)
    assert torch.equal(state["clip_g"], concept.encoders["text_encoder_2"].vectors)
    by_order, by_keys = first_tensor_names(path)
    assert by_order in ("clip_g", "clip_l") and by_keys in ("clip_g", "clip_l")  # never an initializer first
    back = Concept.load(path)
    assert set(back.encoders) == {"text_encoder", "text_encoder_2"} and back.encoders["text_encoder"].magnitude == 0.387


def test_old_concept_files_without_the_copies_still_load_and_a_tampered_copy_is_caught(tmp_path):
    vectors = good_rows(2)
    old = dti_file(tmp_path / "old.safetensors")  # dti's layout before the copies
    assert torch.equal(Concept.load(old).encoders["text_encoder"].vectors, vectors)
    new = Concept("<n>", {"text_encoder": EncoderVectors(vectors, 0.4)}, {}).save(tmp_path / "new.safetensors")
    with safe_open(str(new), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(str(new))
    state["emb_params"] = good_rows(2, seed=8)
    save_file(state, tmp_path / "tampered.safetensors", metadata=metadata)
    with pytest.raises(DTIError, match="'emb_params' other tools read differs"):
        Concept.load(tmp_path / "tampered.safetensors")


# ------------------------------------------------------------------ trigger words
def test_check_trigger_word_refuses_ordinary_words(clip_tok):
    from dti.testing.t5 import t5_tokenizer

    for token in ("<toy>", "toy", "<Toy>", "dog"):
        with pytest.raises(DTIError, match="use a made-up name such as '<my-"):
            check_trigger_word(token, {"text_encoder": clip_tok})
    for token in ("<my-toy>", "<toy-thing>"):
        check_trigger_word(token, {"text_encoder": clip_tok})
    with pytest.raises(DTIError, match="of the text_encoder_2 tokenizer"):  # SentencePiece: '▁toy'
        check_trigger_word("<toy>", {"text_encoder_2": t5_tokenizer()})
    check_trigger_word("<my-toy>", {"text_encoder_2": t5_tokenizer()})
    check_trigger_word("<toy>", {})


def test_convert_checks_the_trigger_word_against_the_base_models_tokenizer(tmp_path, tiny_sd, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    concept = Concept("<toy>", {"text_encoder": EncoderVectors(good_rows(1))}, {"method": "dti", "base_model": str(tiny_sd)})
    path = concept.save(tmp_path / "toy.dti.safetensors")
    out = tmp_path / "out"
    for fmt in ("a1111", "comfyui", "kohya"):
        assert_refused(["convert", path, "--to", fmt, "--out", out], capsys, "'toy' is the trigger word", untouched=[out])
    assert_refused(
        ["convert", path, "--to", "kohya"], capsys, "'toy' is the trigger word", untouched=[tmp_path]
    )  # default: ./toy.safetensors
    assert main(["convert", str(path), "--to", "a1111", "--out", str(out / "chosen.safetensors")]) == 0  # a file name given is the user's
    assert main(["convert", str(path), "--to", "a1111", "--token", "<my-toy>", "--out", str(out)]) == 0
    assert (out / "my-toy.safetensors").is_file()
    assert main(["convert", str(path), "--to", "dti", "--out", str(out / "toy.safetensors")]) == 0  # dti's own file has no trigger word
    elsewhere = Concept("<toy>", {"text_encoder": EncoderVectors(good_rows(1))}, {"base_model": "some/hub-model"})
    assert main(["convert", str(elsewhere.save(tmp_path / "e.safetensors")), "--to", "a1111", "--out", str(tmp_path / "e")]) == 0
    assert (
        main(
            [
                "convert",
                str(elsewhere.save(tmp_path / "e.safetensors")),
                "--to",
                "a1111",
                "--model",
                str(tiny_sd),
                "--out",
                str(tmp_path / "f"),
            ]
        )
        == 2
    )
