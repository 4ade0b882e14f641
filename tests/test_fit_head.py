"""Fitting uncertainty heads on a frozen backbone: recovery of known noise, determinism, files."""

import csv
import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

from facetrust.errors import ConfigError, InputError
from facetrust.models.artifacts import load_uncertainty_head as load_head
from facetrust.models.uncertainty.methods import predict_uncertainty
from facetrust.train.batches import identity_batches
from facetrust.train.fit_head import fit_head, fit_head_on_features, resolve_config

FAST = {"epochs": 30, "batch_size": 64, "lr": 3e-3, "hidden": [32], "device": "cpu"}


def toy_problem(seed=0, classes=16, per_class=16, dim=32):
    """Embeddings = class centre + noise of a known per-image scale s; the "feature map" carries
    the noise vector, a noisy reading of log s (the degradation signal a real conv map holds) and
    distractor channels. Returns (embeddings, feature_maps, labels, centres, s)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(classes), per_class)
    n = len(labels)
    scale = np.exp(rng.uniform(np.log(0.05), np.log(1.0), n))
    noise = rng.standard_normal((n, dim)) / np.sqrt(dim) * scale[:, None]
    embeddings = (centres[labels] + noise) * 10.0
    signal = np.log(scale)[:, None] + 0.1 * rng.standard_normal((n, 1))
    feature_maps = np.concatenate([noise, signal, rng.standard_normal((n, 3))], axis=1).reshape(n, -1, 2, 2)
    return (embeddings.astype(np.float32), feature_maps.astype(np.float32), labels, centres.astype(np.float32), scale)


def read_log(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("method", ["scf", "scf_g", "pfe"])
def test_fitted_uncertainty_ranks_like_the_true_noise_and_loss_decreases(tmp_path, method):
    torch.set_num_threads(1)
    embeddings, feature_maps, labels, centres, scale = toy_problem()
    path = fit_head_on_features(method, embeddings, feature_maps, labels, centres, tmp_path, FAST)
    head = load_head(tmp_path)
    assert head.method == method and path == tmp_path / "head.pt"
    # unseen images from the same generator
    test_emb, test_maps, _, _, test_scale = toy_problem(seed=1)
    uncertainty, extra = predict_uncertainty(head, method, test_emb, test_maps)
    assert uncertainty.shape == (len(test_scale),) and uncertainty.dtype == np.float32
    assert spearmanr(uncertainty, test_scale).correlation > 0.8
    if method == "pfe":
        assert extra["sigma_sq"].shape == test_emb.shape
    else:
        assert np.allclose(uncertainty, 1.0 / extra["kappa"], rtol=1e-5)
        assert spearmanr(np.log(extra["kappa"]), test_scale).correlation < -0.8
    losses = [float(row["loss"]) for row in read_log(tmp_path / "fit_log.csv")]
    assert len(losses) == FAST["epochs"] and losses[-1] < losses[0]


def test_same_seed_gives_identical_heads_and_another_seed_does_not(tmp_path):
    torch.set_num_threads(1)
    embeddings, feature_maps, labels, centres, _ = toy_problem(classes=6, per_class=8)
    config = {**FAST, "epochs": 2, "batch_size": 16}
    states = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        for method in ("scf", "pfe"):
            fit_head_on_features(
                method, embeddings, feature_maps, labels, centres, tmp_path / name / method, {**config, "seed": seed}
            )
        states.append(
            {m: torch.load(tmp_path / name / m / "head.pt", weights_only=True)["state_dict"] for m in ("scf", "pfe")}
        )
    for method in ("scf", "pfe"):
        a, b, c = (s[method] for s in states)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not all(torch.equal(a[k], c[k]) for k in a)


def test_identity_batches_hold_genuine_pairs_and_cover_each_image_at_most_once():
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 3])
    batches = identity_batches(labels, batch_size=4, images_per_class=2, rng=np.random.default_rng(0))
    used = np.concatenate(batches)
    assert len(used) == len(set(used.tolist()))
    assert 5 not in used  # the single image of class 2 makes no pair
    for batch in batches:
        _, counts = np.unique(labels[batch], return_counts=True)
        assert counts.max() >= 2


def test_config_errors_name_the_key_and_the_allowed_values():
    with pytest.raises(ConfigError, match="'method'.*allowed: pfe, scf, scf_g"):
        resolve_config({"method": "magface"})
    with pytest.raises(ConfigError, match="unknown fit-head config key.*'epoch'"):
        resolve_config({"epoch": 3})
    with pytest.raises(ConfigError, match="'lr'"):
        resolve_config({"lr": 0})
    assert resolve_config({"method": "scf", "hidden": 64})["hidden"] == [64]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_load_head_refuses_missing_and_non_weights_only_files(tmp_path):
    with pytest.raises(InputError, match="no uncertainty head"):
        load_head(tmp_path)

    class Payload:  # an arbitrary object: weights_only loading must refuse it, never run it
        def __reduce__(self):
            return (print, ("executed",))

    with open(tmp_path / "head.pt", "wb") as handle:
        pickle.dump({"format": "facetrust-uncertainty-head", "x": Payload()}, handle)
    with pytest.raises(InputError, match="not a loadable head file"):
        load_head(tmp_path)


def _write_tiny_recordio(rec_dir, classes=4, per_class=6, size=32, seed=0):
    from facetrust.data.insightface import write_insightface_dataset

    rng = np.random.default_rng(seed)

    def samples():
        for label in range(classes):
            base = rng.integers(0, 255, (size, size, 3))
            for _ in range(per_class):
                image = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="JPEG", quality=90)
                yield label, buffer.getvalue()

    write_insightface_dataset(rec_dir, samples(), classes, (size, size))


def _write_tiny_checkpoint(model_dir, classes=4):
    from facetrust.models import build_backbone
    from facetrust.models.artifacts import save_checkpoint
    from facetrust.train.config import TrainConfig

    config = TrainConfig(
        backbone="mobilefacenet", backbone_options={"width": 4}, embedding_size=16, input_size=(32, 32)
    )
    torch.manual_seed(0)
    backbone = build_backbone("mobilefacenet", embedding_size=16, input_size=(32, 32), width=4)
    save_checkpoint(
        model_dir / "checkpoint.pt",
        {
            "backbone": backbone.state_dict(),
            "head": {"weight": torch.randn(classes, 16)},
            "config": config.to_dict(),
            "epoch": 1,
            "step": 1,
            "num_classes": classes,
            "feature_map_shape": list(backbone.feature_map_shape),
        },
    )
    return backbone


@pytest.mark.parametrize("method", ["scf", "pfe"])
def test_fit_head_stage_reads_recordio_and_checkpoint_and_writes_a_loadable_head(tmp_path, method):
    torch.set_num_threads(1)
    _write_tiny_recordio(tmp_path / "data")
    backbone = _write_tiny_checkpoint(tmp_path / "model")
    out = tmp_path / "head"
    path = fit_head(
        method,
        tmp_path / "model",
        tmp_path / "data",
        out,
        {"epochs": 2, "batch_size": 8, "hidden": [8], "extract_batch_size": 10, "device": "cpu"},
    )
    assert path == out / "head.pt"
    assert sorted(p.name for p in out.iterdir()) == ["fit_log.csv", "head.pt"]  # feature cache removed
    head = load_head(out)
    assert head.fit_config["method"] == method and head.fit_config["epochs"] == 2
    embedding, feature_map = backbone.eval()(torch.randn(3, 3, 32, 32), return_feature_map=True)
    uncertainty, _ = predict_uncertainty(head, method, embedding.detach(), feature_map.detach())
    assert uncertainty.shape == (3,) and np.all(np.isfinite(uncertainty)) and np.all(uncertainty > 0)


def test_fit_head_names_the_checkpoint_when_it_is_missing(tmp_path):
    with pytest.raises(InputError, match="checkpoint"):
        fit_head("scf", tmp_path / "nomodel", tmp_path / "nodata", tmp_path / "out", {"device": "cpu"})
    with pytest.raises(ConfigError, match="allowed: pfe, scf, scf_g"):
        fit_head("gauss", tmp_path / "nomodel", tmp_path / "nodata", tmp_path / "out")


@pytest.mark.parametrize("method", ["pfe", "scf"])
def test_embed_keeps_pfes_per_dimension_sigma_and_only_pfes(tmp_path, method):
    """issue 18: embed's estimator returns PFE's σ² per dimension (uncertainty_per_dim) beside the
    scalar, which is its harmonic mean over dimensions; SCF has none."""
    from facetrust.embed import uncertainty_estimator

    torch.set_num_threads(1)
    embeddings, feature_maps, labels, centres, _ = toy_problem()
    fit_head_on_features(method, embeddings, feature_maps, labels, centres, tmp_path, {**FAST, "epochs": 2})
    estimate, kind = uncertainty_estimator(None, tmp_path, {}, {})
    scalar, per_dim = estimate(torch.from_numpy(embeddings[:20]), torch.from_numpy(feature_maps[:20]))
    assert kind == method and scalar.shape == (20,)
    if method == "pfe":
        assert per_dim.shape == (20, embeddings.shape[1]) and per_dim.dtype == np.float32
        harmonic = 1.0 / np.mean(1.0 / per_dim.astype(np.float64), axis=1)
        assert np.allclose(scalar, harmonic, rtol=1e-5)
        assert np.ptp(np.log(per_dim), axis=1).max() > 0  # not one value repeated over the dimensions
    else:
        assert per_dim is None
