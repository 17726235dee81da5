"""Concept interpolation: slerp at fixed norm (METHOD.md section 7) and lerp for contrast."""

import pytest
import torch

from dti.concepts.blend import blend
from dti.concepts.concept import Concept, EncoderVectors
from dti.core import sphere
from dti.core.errors import DTIError

WEIGHTS = [0.0, 0.25, 0.5, 0.75, 1.0]


def dti_concept(token, seed, m=(0.4, 0.45), n=1, base="m"):
    g = torch.Generator().manual_seed(seed)
    encoders = {
        name: EncoderVectors(mag * sphere.normalize(torch.randn(n, w, generator=g)), mag)
        for name, mag, w in (("text_encoder", m[0], 16), ("text_encoder_2", m[1], 24))
    }
    return Concept(token, encoders, {"method": "dti", "base_model": base})


def test_slerp_endpoints_norms_and_even_angles():
    a, b = dti_concept("<a>", 0, n=2), dti_concept("<b>", 1, n=2)
    mix = blend(a, b, WEIGHTS)
    for name in a.encoders:
        assert torch.equal(mix.concepts[0].encoders[name].vectors, a.encoders[name].vectors)
        assert torch.equal(mix.concepts[-1].encoders[name].vectors, b.encoders[name].vectors)
        total = sphere.angle(a.encoders[name].vectors, b.encoders[name].vectors)
        for t, c in zip(WEIGHTS, mix.concepts):
            enc = c.encoders[name]
            assert torch.allclose(enc.norms, torch.full((2,), a.encoders[name].magnitude), atol=1e-6)
            assert torch.allclose(sphere.angle(a.encoders[name].vectors, enc.vectors), t * total, atol=1e-5)
    assert mix.notes == []


def test_lerp_dips_in_norm_and_says_so():
    a, b = dti_concept("<a>", 0), dti_concept("<b>", 1)
    mix = blend(a, b, WEIGHTS, mode="lerp")
    mid = mix.concepts[2].encoders["text_encoder"]
    assert float(mid.norms[0]) < 0.4 - 1e-3
    assert torch.allclose(mid.vectors, (a.encoders["text_encoder"].vectors + b.encoders["text_encoder"].vectors) / 2, atol=1e-7)
    assert any("dips" in n for n in mix.notes)


def test_identical_concepts_give_a_constant_path():
    a = dti_concept("<a>", 0)
    mix = blend(a, a.renamed("<a2>"), WEIGHTS)
    for c in mix.concepts:
        assert torch.allclose(c.encoders["text_encoder"].vectors, a.encoders["text_encoder"].vectors, atol=1e-7)


def test_antipodal_directions_are_refused_for_slerp_but_lerp_works():
    a = dti_concept("<a>", 0)
    b = Concept("<b>", {n: EncoderVectors(-e.vectors, e.magnitude) for n, e in a.encoders.items()}, {"method": "dti"})
    with pytest.raises(DTIError, match="antipodal"):
        blend(a, b, WEIGHTS)
    mid = blend(a, b, WEIGHTS, mode="lerp").concepts[2]
    assert float(mid.encoders["text_encoder"].norms[0]) < 1e-6


def test_ti_concepts_interpolate_norms_linearly_and_note_it():
    a = Concept("<a>", {"text_encoder": EncoderVectors(torch.randn(1, 16) * 2.0)}, {"method": "ti"})
    b = Concept("<b>", {"text_encoder": EncoderVectors(torch.randn(1, 16) * 5.0)}, {"method": "ti"})
    mix = blend(a, b, WEIGHTS)
    na, nb = float(a.encoders["text_encoder"].norms[0]), float(b.encoders["text_encoder"].norms[0])
    for t, c in zip(WEIGHTS, mix.concepts):
        assert float(c.encoders["text_encoder"].norms[0]) == pytest.approx((1 - t) * na + t * nb, rel=1e-5)
    assert any("no fixed norm" in n for n in mix.notes)


def test_different_magnitudes_are_noted():
    mix = blend(dti_concept("<a>", 0, m=(0.4, 0.45)), dti_concept("<b>", 1, m=(0.2, 0.45)), WEIGHTS)
    assert any("magnitudes differ" in n for n in mix.notes)
    assert float(mix.concepts[2].encoders["text_encoder"].norms[0]) == pytest.approx(0.3, abs=1e-6)


@pytest.mark.parametrize(
    "b, pattern",
    [
        (Concept("<b>", {"text_encoder": EncoderVectors(torch.randn(1, 16))}), "encoders"),
        (
            Concept("<b>", {"text_encoder": EncoderVectors(torch.randn(1, 8)), "text_encoder_2": EncoderVectors(torch.randn(1, 24))}),
            "widths",
        ),
        (dti_concept("<b>", 1, base="other"), "same base model"),
        (dti_concept("<b>", 1, n=2), "same count"),
    ],
)
def test_incompatible_pairs_are_refused(b, pattern):
    with pytest.raises(DTIError, match=pattern):
        blend(dti_concept("<a>", 0), b, WEIGHTS)


def test_weights_outside_unit_interval_are_refused():
    with pytest.raises(DTIError, match="outside"):
        blend(dti_concept("<a>", 0), dti_concept("<b>", 1), [0.0, 1.5])


@pytest.mark.parametrize("failing", ["interpolation.json", "blend-02"])
def test_written_blends_appear_together_or_not_at_all(tmp_path, failing):
    """A write failing part-way (a full disk at the summary, or at the last blend) leaves no partial
    set behind, and an earlier set in the folder is kept whole."""
    from dti.testing.faults import fail_os_replace
    from dti.use.interpolate import interpolate

    a, b = dti_concept("<a>", 0), dti_concept("<b>", 1)
    out = tmp_path / "blends"
    with fail_os_replace(match=failing), pytest.raises(DTIError, match=r"no space left|free space"):
        interpolate(a, b, out, blends=3, grid=False)
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []
    first = interpolate(a, b, out, blends=3, grid=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(before) == 4 and len(first.files) == 3
    with fail_os_replace(match=failing), pytest.raises(DTIError):
        interpolate(b, a, out, blends=3, grid=False, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
