"""dti-mini: its tokenizer, its training script, the shipped pipeline, and `dti demo`."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from dti.mini import world
from dti.mini.model import PACKAGED, MiniConfig, load_pipeline
from dti.mini.tokenizer import build_vocabulary, mini_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def refused(main, argv: list[str], capsys, pattern: str) -> str:
    """A build script's refusal: exit status 2 and one ``error:`` line matching ``pattern``, as `dti` does."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(pattern, lines[0]), lines
    return lines[0]


def test_every_world_word_is_one_token_and_captions_round_trip():
    tok = mini_tokenizer(world.vocabulary())
    rng = __import__("random").Random(0)
    for _ in range(50):
        _, text = world.sample_caption(rng)
        ids = tok(text, add_special_tokens=False).input_ids
        assert len(ids) == len(text.split())
        assert tok.decode(ids) == text
    assert tok.unk_token_id not in tok("a red star", add_special_tokens=False).input_ids


def test_bpe_vocabulary_repairs_words_split_by_other_words_merges():
    words = ["red", "green", "reed", "greed", "tree", "street"]
    tokens, merges = build_vocabulary(words)
    tok = mini_tokenizer(words)
    assert all(len(tok(w, add_special_tokens=False).input_ids) == 1 for w in words)
    assert len(set(tokens)) == len(tokens) and len(set(merges)) == len(merges)


def test_training_script_resumes_and_exports_a_loadable_pipeline(tmp_path, capsys):
    from tools.mini_build.train_base import main

    out = tmp_path / "base"
    args = ["--out", str(out), "--vae-steps", "2", "--vae-batch", "4", "--steps", "2", "--batch", "4", "--checkpoint-every", "1", "--quiet"]
    assert main(args) == 0
    first = torch.load(out / "diffusion.pt", weights_only=True)["step"]
    refused(main, args, capsys, r"already holds checkpoints; pass --resume")
    assert main([*args[:7], "3", *args[8:], "--resume", "--export", str(tmp_path / "export")]) == 0
    state = torch.load(out / "diffusion.pt", weights_only=True)
    assert (first, state["step"]) == (2, 3)
    log = [json.loads(line) for line in (out / "train_base_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["stage"] == "unet"] == [1, 2, 3]
    pipe = load_pipeline(tmp_path / "export")
    assert pipe.text_encoder is None and pipe.tokenizer is None and pipe.unet.config.sample_size == MiniConfig().image_size // 2
    assert json.loads((tmp_path / "export" / "dti.json").read_text())["templates"] == ["a {}"]
    image = pipe("a red star", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)
    assert "python -m tools.mini_build.train_base" in (tmp_path / "export" / "README.md").read_text()  # the card, at the new path

    export = tmp_path / "export"  # an export is never replaced unasked, and that is checked before any training
    (export / "quality.json").write_text("{}")  # a report on these weights
    weights = (export / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    refused(main, [*args[:7], "4", *args[8:], "--resume", "--export", export], capsys, r"--export .* is not empty; pass --overwrite")
    assert torch.load(out / "diffusion.pt", weights_only=True)["step"] == 3
    assert (export / "quality.json").is_file() and (export / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == weights
    (out / "train_base_log.jsonl").write_text(
        (out / "train_base_log.jsonl").read_text() + json.dumps({"stage": "vae_from", "source": "x"}) + "\n"
    )
    assert main(["--out", str(out), "--export-only", "--export", str(export), "--overwrite", "--quiet"]) == 0
    assert json.loads((export / "dti_mini.json").read_text())["training"]["vae_from"] == "x"  # this export, not the earlier one
    assert not (export / "quality.json").exists() and "Quality gate" not in (export / "README.md").read_text()  # it judged the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "export"]  # no staging folder left behind
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused(main, ["--out", out, "--export-only", "--export", mine, "--overwrite"], capsys, r"no dti-mini export \(no dti_mini\.json\)")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["--export-only", "--export", "{tmp}/export"], r"holds no diffusion\.pt to export; train first"),
        (["--export-only"], r"--export-only needs --export FOLDER"),
        (["--resume"], r"--resume: .* holds no checkpoints"),
        (["--steps", "0"], r"argument --steps: 0 is below 1"),
        (["--high-noise", "1.5"], r"--high-noise: 1\.5 is not a share between 0 and 1"),
        (["--device", "cuda"] if not torch.cuda.is_available() else ["--workers", "-1"], r"no CUDA device here|--workers: -1 is below 0"),
    ],
)
def test_train_base_refuses_bad_runs_in_one_line_and_writes_nothing(tmp_path, capsys, argv, pattern):
    from tools.mini_build.train_base import main

    refused(main, ["--out", tmp_path / "run", *(a.format(tmp=tmp_path) for a in argv), "--quiet"], capsys, pattern)
    assert list(tmp_path.iterdir()) == []


def test_training_can_go_on_from_the_shipped_model(tmp_path, capsys):
    from tools.mini_build.train_base import main

    info = json.loads((PACKAGED / "dti_mini.json").read_text())
    out = tmp_path / "more"
    common = ["--out", str(out), "--batch", "2", "--checkpoint-every", "1", "--quiet"]
    assert main([*common, "--init-from", str(PACKAGED), "--steps", str(info["steps"])]) == 0  # seeded, nothing left to train
    assert f"warning: {out / 'diffusion.pt'} is already at step {info['steps']}" in capsys.readouterr().err
    state = torch.load(out / "diffusion.pt", weights_only=True)
    shipped = load_pipeline().unet.state_dict()
    assert state["step"] == info["steps"] and state["optimizer"] is None
    assert all(torch.equal(state["ema"][f"unet.{k}"], v.float()) for k, v in shipped.items())
    vae_before = torch.load(out / "vae.pt", weights_only=True)["model"]
    main([*common, "--resume", "--vae-steps", str(10**6), "--steps", str(info["steps"] + 1)])  # one more step
    state = torch.load(out / "diffusion.pt", weights_only=True)
    assert state["step"] == info["steps"] + 1 and state["optimizer"] is not None
    assert not torch.equal(state["model"]["unet.conv_out.weight"], shipped["conv_out.weight"].float())
    vae_after = torch.load(out / "vae.pt", weights_only=True)["model"]
    assert all(torch.equal(vae_before[k], vae_after[k]) for k in vae_before)  # the latent space stays put
    log = [json.loads(line) for line in (out / "train_base_log.jsonl").read_text().splitlines()]
    assert log[0]["stage"] == "warm_start" and log[-1]["step"] == info["steps"] + 1
    refused(main, [*common, "--init-from", str(PACKAGED)], capsys, r"already holds checkpoints; pass --resume")


def test_init_from_a_folder_that_is_no_export_is_refused_before_anything_is_written(tmp_path, capsys):
    from tools.mini_build.train_base import main

    refused(main, ["--out", str(tmp_path / "run"), "--init-from", str(tmp_path), "--quiet"], capsys, r"--init-from .*: no dti_mini\.json")
    assert not (tmp_path / "run").exists()


def test_packaged_model_loads_offline_and_generates():
    assert (PACKAGED / "model_index.json").is_file(), "the shipped dti-mini weights are missing"
    size = sum(p.stat().st_size for p in PACKAGED.rglob("*") if p.is_file())
    assert size < 40 * 2**20
    pipe = load_pipeline()
    a = pipe(
        "a large red star in the center on a plain gray background",
        num_inference_steps=10,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    b = pipe(
        "a large red star in the center on a plain gray background",
        num_inference_steps=10,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    assert a.shape == (32, 32, 3) and np.array_equal(a, b)  # deterministic per seed


def test_quality_gate_runs_on_the_packaged_model_with_its_ceilings():
    from tools.mini_build.evaluate import evaluate_base, reconstructions, tally

    from dti.mini.judge import Judge

    pipe = load_pipeline()
    scenes = world.heldout_scenes(6, seed=3)
    perfect = tally(scenes, [world.spec(s) for s in scenes])
    assert perfect["joint"] == 1.0 and set(perfect["accuracy"].values()) == {1.0}
    renders = [world.render(s) for s in scenes]
    back = reconstructions(pipe.vae, renders)
    error = np.abs(np.stack([np.asarray(b, np.float32) for b in back]) - np.stack([np.asarray(r, np.float32) for r in renders]))
    assert back[0].size == (32, 32) and error.mean() < 20  # the VAE gives the scene back (in 0..255 units)
    report = evaluate_base(pipe, Judge.load(), n=6, seed=3, steps=2)
    assert len(report["images"]) == 6 and report["captions"] == 6
    assert report["ceiling"]["clean_renders"]["joint"] >= 5 / 6  # the judge reads clean renders of these scenes
    assert all(0.0 <= v <= 1.0 for v in report["accuracy"].values()) and "position" in report["accuracy"]


def test_evaluate_writes_its_report_grid_and_captions_together_and_refreshes_the_card(tmp_path, capsys):
    from tools.mini_build.evaluate import main

    model = tmp_path / "model"
    shutil.copytree(PACKAGED, model)
    for name in ("quality.json", "quality.png", "quality.prompts.txt"):
        (model / name).unlink()
    argv = ["--model", model, "--n", "2", "--steps", "1", "--out", model / "quality.json", "--quiet"]
    assert main([str(a) for a in argv]) == 0
    report = json.loads((model / "quality.json").read_text())
    assert report["captions"] == 2 and report == json.loads(capsys.readouterr().out)  # what it printed is what it wrote
    assert (model / "quality.prompts.txt").read_text().splitlines() == [world.caption(s) for s in world.heldout_scenes(2, 0)]
    assert (model / "quality.png").stat().st_size > 0
    card = (model / "README.md").read_text()
    assert "2 full captions of held-out combinations" in card and f"{report['joint']:.1%} |" in card
    before = (model / "quality.json").stat().st_mtime_ns
    refused(main, argv, capsys, r"--out .*quality\.json already exists; pass --overwrite")
    assert (model / "quality.json").stat().st_mtime_ns == before
    assert main([*map(str, argv), "--overwrite"]) == 0
    refused(main, ["--model", tmp_path, "--n", "1"], capsys, r"--model .*: no model_index\.json there")
    refused(main, ["--n", "1", "--out", tmp_path / "grid.png"], capsys, r"name of its own sample grid")
    refused(main, ["--n", "0"], capsys, r"--n 0 must be at least 1")


def test_card_is_written_from_the_folders_facts_at_the_new_module_paths(tmp_path, capsys):
    from tools.mini_build.card import main

    model = tmp_path / "model"
    shutil.copytree(PACKAGED, model)
    (model / "README.md").unlink()
    assert main([str(model)]) == 0
    card = (model / "README.md").read_text()
    info, probe = json.loads((model / "dti_mini.json").read_text()), json.loads((model / "probe.json").read_text())
    assert f"- {info['steps']} steps of the UNet" in card
    assert "| " + " | ".join(f"{row['mean']:+.1%}" for row in probe["use"].values()) + " |" in card
    assert all(f"python -m tools.mini_build.{m}" in card for m in ("train_base", "evaluate", "probe"))
    assert "python -m dti.mini.train_base" not in card
    refused(main, [tmp_path], capsys, r"no dti_mini\.json there")


def test_build_scripts_run_as_modules_at_their_new_paths():
    import subprocess
    import sys

    code = (
        "import runpy, sys\n"
        "for name in ('train_base', 'train_judge', 'probe', 'card', 'evaluate'):\n"
        "    sys.argv = [name, '--help']\n"
        "    try:\n"
        "        runpy.run_module(f'tools.mini_build.{name}', run_name='__main__')\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, (name, exc.code)\n"
        "    print('ok', name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line.startswith("ok ")] == [
        f"ok {m}" for m in ("train_base", "train_judge", "probe", "card", "evaluate")
    ]
    assert "python -m tools.mini_build.train_base --out runs/mini-base" in done.stdout  # the usage lines name the new path


def test_demo_runs_end_to_end(tmp_path, capsys):
    from dti.commands import main
    from dti.evaluation.demo import _subject

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "4", "--sample-steps", "4", "--quiet"]) == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    stages = [line for line in stdout if line.startswith("demo: ")]
    for fragment in ("rendering 5 photos", "training <ruby>", "training <berry>", "generating", "scoring", "blending", "writing"):
        assert any(fragment in line for line in stages), (fragment, stages)
    assert stdout[-1].startswith("demo finished in ") and stdout[-1].endswith(f"open {out / 'report.html'}"), stdout[-1]
    report = (out / "report.md").read_text()
    assert "<ruby>" in report and "<berry>" in report and "Slerp" in report and "judge text fidelity" in report
    records = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert sorted({r["subject"] for r in records}) == ["berry", "ruby"] and len(records) == 8  # both words' compositions
    assert all(0.0 <= r["scores"]["mini.text"] <= 1.0 for r in records)
    for r in records:
        token, shape = f"<{r['subject']}>", _subject(r["subject"]).shape
        assert token in r["prompt"] and token not in r["text_prompt"] and shape in r["text_prompt"], r
    html = (out / "report.html").read_text()
    sources = re.findall(r"<img src='([^']+)'", html)
    for src in sources:  # the scatter, the slerp grid, both norm plots and every generated image
        assert (out / src).is_file(), src
    assert "interpolation.png" in sources and "ruby/norms.png" in sources and "berry/norms.png" in sources
    assert sum(src.startswith("generated/") for src in sources) == 8
    # the demo's sections are HTML: tables as tables, code as code, no raw Markdown on the page
    assert "|---|" not in html and "`" not in html and "<pre>" not in html.split("<h2>Settings</h2>")[1].split("</pre>", 1)[1]
    assert "<h2>Slerp from <code>&lt;ruby&gt;</code> to <code>&lt;berry&gt;</code>" in html
    assert html.count("<table>") == 4 and "<td>2</td>" in html  # methods (2 subjects), over subject means, the words, the slerp
    for name in ("ruby", "berry"):
        assert (out / name / "concept.safetensors").is_file() and len(list((out / "photos" / name).glob("*.png"))) == 5
        assert (out / "generated" / name / "contact_sheet.png").is_file()
    assert (out / "interpolation.png").is_file()
    assert main(["demo", "--out", str(out), "--steps", "4"]) == 2  # never over an earlier demo without --overwrite
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err


def test_batches_are_a_function_of_seed_and_step_whoever_renders_them():
    from tools.mini_build.train_base import batches, step_batch

    inline = list(batches(7, 3, 5, 4, 32, 0.5, workers=0))
    ahead = list(batches(7, 3, 5, 4, 32, 0.5, workers=1))
    alone = step_batch(7, 4, 4, 32, 0.5)
    assert len(inline) == len(ahead) == 2
    for (a, ca), (b, cb) in zip(inline, ahead):
        assert torch.equal(a, b) and ca == cb
    assert torch.equal(inline[1][0], alone[0]) and inline[1][1] == alone[1]  # a resumed run draws batch 4 as it was
    assert not torch.equal(inline[0][0], inline[1][0])
    assert inline[0][0].shape == (4, 3, 32, 32) and -1.0 <= float(inline[0][0].min()) and float(inline[0][0].max()) <= 1.0


def test_loss_weights_and_high_noise_timesteps():
    from tools.mini_build.train_base import HIGH_NOISE_FROM, MIN_SNR_GAMMA, loss_weight, sample_timesteps

    alpha_bar = torch.tensor([1e-4, 0.5, 0.99])
    snr = alpha_bar / (1 - alpha_bar)
    assert torch.equal(loss_weight(alpha_bar, "v_prediction", "uniform"), torch.ones(3))
    min_snr = loss_weight(alpha_bar, "v_prediction", "min-snr")
    assert torch.allclose(min_snr, torch.clamp(snr, max=MIN_SNR_GAMMA) / (snr + 1))
    assert float(min_snr[0]) < 1e-3  # Min-SNR all but ignores the noisiest steps, where layouts are decided
    torch.manual_seed(0)
    t = sample_timesteps(40, 0.25, torch.device("cpu"))
    assert t.shape == (40,) and bool((t[:10] >= HIGH_NOISE_FROM).all()) and int(t.min()) >= 0 and int(t.max()) < 1000
    assert bool((t[10:] < HIGH_NOISE_FROM).any())  # the rest stay uniform


def test_vae_from_trains_a_new_text_encoder_and_unet_on_the_shipped_vae(tmp_path, capsys):
    from tools.mini_build.train_base import main

    out = tmp_path / "fresh"
    main(["--out", str(out), "--vae-from", str(PACKAGED), "--steps", "1", "--batch", "2", "--checkpoint-every", "1", "--quiet"])
    shipped = load_pipeline()
    vae = torch.load(out / "vae.pt", weights_only=True)
    assert vae["finished"] and all(torch.equal(vae["model"][k], v.float()) for k, v in shipped.vae.state_dict().items())
    state = torch.load(out / "diffusion.pt", weights_only=True)
    assert state["step"] == 1 and not torch.equal(state["model"]["unet.conv_out.weight"], shipped.unet.conv_out.weight.float())
    table = state["model"]["text_encoder.text_model.embeddings.token_embedding.weight"]
    assert 0.8 < float(table.std()) < 1.2  # unit-scale embeddings, not CLIP's 0.02 (see MiniConfig)
    main(["--out", str(out), "--resume", "--steps", "1", "--batch", "2", "--quiet", "--export", str(tmp_path / "export")])
    training = json.loads((tmp_path / "export" / "dti_mini.json").read_text())["training"]
    shipped_vae_steps = json.loads((PACKAGED / "dti_mini.json").read_text())["training"]["vae_steps"]
    assert training["vae_from"] == str(PACKAGED) and training["vae_steps"] == shipped_vae_steps
    for extra, message in (
        (["--resume"], "cannot be combined with --resume"),
        (["--init-from", str(PACKAGED)], "drop --vae-from"),
    ):
        refused(main, ["--out", str(tmp_path / "other"), "--vae-from", str(PACKAGED), *extra, "--quiet"], capsys, message)
    refused(main, ["--out", str(tmp_path / "other"), "--vae-from", str(tmp_path), "--quiet"], capsys, r"--vae-from .*no dti_mini\.json")
    assert not (tmp_path / "other").exists()


def test_init_only_settings_do_not_make_configs_incompatible():
    old = MiniConfig().as_dict()
    old.pop("text_embed_init_std")  # an export from before the setting existed
    assert MiniConfig.from_dict(old).architecture() == MiniConfig(text_embed_init_std=0.02).architecture()
    assert MiniConfig(unet_channels=(8, 16)).architecture() != MiniConfig().architecture()


def test_build_scripts_report_errors_as_one_line_and_status_2(capsys):
    from tools.mini_build import Parser, script

    from dti.core.errors import DTIError

    def fail(exc: Exception):
        def work(args):
            raise exc

        return work

    assert script(Parser("doc"), [], lambda args: None) == 0
    assert script(Parser("doc"), ["--help"], lambda args: None) == 0
    capsys.readouterr()
    assert script(Parser("doc"), ["--nope"], lambda args: None) == 2
    assert "error: unrecognized arguments: --nope" in capsys.readouterr().err
    assert script(Parser("doc"), [], fail(DTIError("bad input; fix it"))) == 2
    assert capsys.readouterr().err == "error: bad input; fix it\n"
    assert script(Parser("doc"), [], fail(OSError(28, "No space left on device", "/x/unet"))) == 2
    assert (
        capsys.readouterr().err == "error: could not write /x/unet: No space left on device; free space or choose another output folder\n"
    )
    with pytest.raises(ValueError):  # a bug stays a traceback
        script(Parser("doc"), [], fail(ValueError("bug")))
