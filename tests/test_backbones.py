"""The backbone registry: names -> frozen bodies, weights from files or torch's
cache (never the network), presets and fingerprints."""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import MOBILENET, WEIGHTS

from sktransfer._backbones import load_backbone
from sktransfer._transforms import Preprocessing, to_tensor
from sktransfer.exceptions import WeightsUnavailableError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EFFICIENTNET_LITE0 = WEIGHTS / "tf_efficientnet_lite0-imagenet.pth"


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub directory, and a network that always fails."""
    hub = tmp_path / "torch-home" / "hub"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # restored afterwards
    torch.hub.set_dir(str(hub))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    return hub


def publish(state: dict, member, hub: Path, monkeypatch) -> Path:
    """Put ``state`` into the hub cache as if it were the published file of
    the weights ``member``: the file name carries its own SHA-256 prefix, as
    torchvision's names do (the member's URL is pointed at that name)."""
    checkpoints = hub / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    draft = checkpoints / "draft.pth"
    torch.save(state, draft)
    digest = hashlib.sha256(draft.read_bytes()).hexdigest()
    stem = Path(member.url).name.split("-")[0]
    path = draft.rename(checkpoints / f"{stem}-{digest[:8]}.pth")
    url = member.url.rsplit("/", 1)[0] + "/" + path.name
    monkeypatch.setattr(member.value, "url", url)
    return path


def save_state(model: torch.nn.Module, path: Path) -> str:
    torch.save(model.state_dict(), path)
    return str(path)


def random_model(builder, seed: int, **kwargs) -> torch.nn.Module:
    """A model with parameters drawn from ``seed`` (global RNG left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(**kwargs)


def same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- torchvision names ---------------------------------------------------------


@pytest.mark.parametrize(
    "name, n_features",
    [
        ("resnet18", 512),
        ("mobilenet_v2", 1280),
        ("efficientnet_b0", 1280),
        ("convnext_tiny", 768),
    ],
)
def test_random_init_body_gives_pooled_features_and_three_layer_groups(
    name, n_features
):
    bb = load_backbone(name, None)

    with torch.inference_mode():
        out = bb.body(torch.randn(2, 3, 64, 64))

    assert bb.n_features == n_features
    assert out.shape == (2, n_features)
    assert torch.isfinite(out).all()
    assert len(bb.groups) == 3
    assert all(len(group) > 0 for group in bb.groups)
    grouped = {id(p) for group in bb.groups for m in group for p in m.parameters()}
    assert grouped == {id(p) for p in bb.body.parameters()}  # every layer grouped
    assert not bb.body.training
    assert not any(p.requires_grad for p in bb.body.parameters())
    assert bb.weights_id == "random-init"


@pytest.mark.parametrize(
    "name, close", [("resnet1800", "resnet18"), ("mobilenet_v9", "mobilenet_v2")]
)
def test_unknown_backbone_name_raises_listing_close_names(name, close):
    with pytest.raises(ValueError, match="unknown backbone") as info:
        load_backbone(name, None)
    message = str(info.value)
    assert repr(name) in message
    assert close in message


def test_unknown_timm_name_raises_ValueError():
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match="timm:no_such_model"):
        load_backbone("timm:no_such_model", None)


def test_backbone_name_must_be_a_string():
    with pytest.raises(TypeError, match="string"):
        load_backbone(None, None)


# -- weights from local files --------------------------------------------------


def test_local_state_dict_file_is_loaded_with_file_identity_and_preset(tmp_path):
    source = random_model(torchvision.models.mobilenet_v2, seed=3)
    path = save_state(source, tmp_path / "mnv2.pth")

    bb = load_backbone("mobilenet_v2", path)

    assert bb.weights_id.startswith("file:")
    assert bb.preprocessing == Preprocessing(256, 224, IMAGENET_MEAN, IMAGENET_STD)
    loaded = bb.body.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("classifier"):
            assert torch.equal(loaded[key], value), key


def test_local_state_dict_wrapped_in_a_checkpoint_dict_with_module_prefix_loads(
    tmp_path,
):
    source = random_model(torchvision.models.resnet18, seed=4)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    path = tmp_path / "ckpt.pt"
    torch.save(wrapped, path)

    bb = load_backbone("resnet18", str(path))

    assert torch.equal(bb.body.conv1.weight, source.conv1.weight)


@pytest.mark.real_data
@pytest.mark.skipif(not MOBILENET.exists(), reason="../shared weights are not present")
def test_shared_mobilenet_v2_file_loads_with_imagenet_preset():
    bb = load_backbone("mobilenet_v2", str(MOBILENET))

    assert bb.weights_id.startswith("file:")
    assert bb.n_features == 1280
    pre = bb.preprocessing
    assert (pre.resize_size, pre.crop_size) == (256, 224)
    assert pre.mean == pytest.approx(IMAGENET_MEAN)
    assert pre.std == pytest.approx(IMAGENET_STD)
    with torch.inference_mode():
        out = bb.body(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 1280)


def test_weights_file_of_another_architecture_raises_naming_file_and_keys(tmp_path):
    path = save_state(random_model(torchvision.models.resnet18, 0), tmp_path / "r.pth")

    with pytest.raises(ValueError) as info:
        load_backbone("mobilenet_v2", path)

    message = str(info.value)
    assert path in message
    assert "missing keys" in message and "features.0.0.weight" in message
    assert "unexpected keys" in message and "conv1.weight" in message


def test_weights_file_with_wrong_shapes_raises_naming_the_tensor(tmp_path):
    state = random_model(torchvision.models.resnet18, 0, num_classes=10).state_dict()
    path = tmp_path / "ten-classes.pth"
    torch.save(state, path)

    with pytest.raises(ValueError, match="shape mismatches") as info:
        load_backbone("resnet18", str(path))
    assert "fc.weight" in str(info.value)
    assert str(path) in str(info.value)


def test_weights_file_that_is_not_a_state_dict_raises_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"definitely not a torch file")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_backbone("resnet18", str(garbage))

    missing = tmp_path / "missing.pth"
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_backbone("resnet18", str(missing))


# -- registry weights without network ------------------------------------------


def test_default_weights_offline_and_uncached_raise_with_local_path_hint(offline_hub):
    with pytest.raises(WeightsUnavailableError) as info:
        load_backbone("resnet18", "DEFAULT")

    message = str(info.value)
    assert "path" in message and "weights='/path/to/file.pth'" in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert list(offline_hub.rglob("*.pth")) == []  # nothing half-downloaded


def test_default_weights_are_read_from_torch_hub_cache_without_network(
    offline_hub, monkeypatch
):
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    source = random_model(torchvision.models.resnet18, seed=5)
    publish(source.state_dict(), weights, offline_hub, monkeypatch)

    bb = load_backbone("resnet18", "DEFAULT")

    assert torch.equal(bb.body.conv1.weight, source.conv1.weight)
    assert torch.equal(
        bb.body.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var
    )
    assert bb.weights_id == f"torchvision:{weights}"
    assert (bb.preprocessing.resize_size, bb.preprocessing.crop_size) == (256, 224)
    # The weights name is accepted in both spellings and finds the same file.
    by_name = load_backbone("resnet18", "ResNet18_Weights.IMAGENET1K_V1")
    assert same_parameters(by_name.body, bb.body)


def _published_layout_state(name: str) -> dict:
    """A state_dict laid out like torchvision's published file of ``name``
    (GoogLeNet and Inception v3 files include the auxiliary classifiers)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(9)
        model = torchvision.models.get_model(
            name, weights=None, aux_logits=True, init_weights=False
        )
    return model.eval().state_dict()


def _torchvision_reference(name: str, state: dict) -> torch.nn.Module:
    """The body as torchvision builds it for pretrained weights: auxiliary
    heads dropped and ``transform_input=True`` (the weights expect it)."""
    model = torchvision.models.get_model(
        name, weights=None, aux_logits=False, init_weights=False, transform_input=True
    )
    kept = {k: v for k, v in state.items() if not k.lower().startswith("aux")}
    model.load_state_dict(kept)
    model.fc = torch.nn.Identity()
    return model.eval()


@pytest.mark.parametrize("source", ["DEFAULT", "file"])
@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_googlenet_and_inception_weights_give_torchvision_pretrained_features(
    offline_hub, tmp_path, monkeypatch, name, source
):
    state = _published_layout_state(name)
    if source == "DEFAULT":
        member = torchvision.models.get_model_weights(name).DEFAULT
        publish(state, member, offline_hub, monkeypatch)
        weights = "DEFAULT"
    else:
        weights = str(tmp_path / f"{name}.pth")
        torch.save(state, weights)
    batch = torch.randint(0, 256, (2, 80, 80, 3), dtype=torch.uint8).numpy()

    bb = load_backbone(name, weights)

    reference = _torchvision_reference(name, state)
    imagenet = Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    with torch.inference_mode():
        got = bb.body(to_tensor(batch, bb.preprocessing))
        expected = reference(to_tensor(batch, imagenet))
    scale = expected.abs().max().item()  # random weights: tiny activations
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4 * scale)


def test_unknown_weights_name_lists_the_choices():
    with pytest.raises(ValueError, match="IMAGENET1K_V1") as info:
        load_backbone("resnet18", "IMAGENET9K_V7")
    assert "DEFAULT" in str(info.value)


# -- timm ----------------------------------------------------------------------


def test_timm_local_file_gives_timm_preset_and_feature_size(tmp_path):
    timm = pytest.importorskip("timm")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(6)
        source = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    path = save_state(source, tmp_path / "lite0.pth")

    bb = load_backbone("timm:tf_efficientnet_lite0", path)

    assert bb.name == "timm:tf_efficientnet_lite0"
    assert bb.weights_id.startswith("file:")
    assert bb.n_features == 1280
    assert bb.preprocessing.mean == pytest.approx((0.5, 0.5, 0.5))
    assert bb.preprocessing.std == pytest.approx((0.5, 0.5, 0.5))
    assert torch.equal(bb.body.conv_stem.weight, source.conv_stem.weight)
    with torch.inference_mode():
        assert bb.body(torch.zeros(2, 3, 64, 64)).shape == (2, 1280)


@pytest.mark.real_data
@pytest.mark.skipif(
    not EFFICIENTNET_LITE0.exists(), reason="../shared weights are not present"
)
def test_timm_shared_efficientnet_lite0_file_has_half_mean_std_and_1280_features():
    pytest.importorskip("timm")
    bb = load_backbone("timm:tf_efficientnet_lite0", str(EFFICIENTNET_LITE0))

    assert bb.n_features == 1280
    assert bb.preprocessing.mean == pytest.approx((0.5, 0.5, 0.5))
    assert bb.preprocessing.std == pytest.approx((0.5, 0.5, 0.5))
    assert (bb.preprocessing.resize_size, bb.preprocessing.crop_size) == (256, 224)
    with torch.inference_mode():
        assert bb.body(torch.zeros(1, 3, 64, 64)).shape == (1, 1280)


# -- determinism and identity --------------------------------------------------


def test_random_init_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(1234)
    state = torch.get_rng_state()

    a = load_backbone("resnet18", None)
    b = load_backbone("resnet18", None)

    assert torch.equal(torch.get_rng_state(), state)
    assert same_parameters(a.body, b.body)


def test_fingerprint_depends_on_weights_preprocessing_and_precision(tmp_path):
    path = save_state(random_model(torchvision.models.resnet18, 7), tmp_path / "a.pth")
    copy = tmp_path / "copy-of-a.pth"
    shutil.copy(path, copy)
    other = save_state(random_model(torchvision.models.resnet18, 8), tmp_path / "b.pth")

    from_file = load_backbone("resnet18", path)
    pre = from_file.preprocessing
    key = from_file.fingerprint(pre, "fp32")

    assert load_backbone("resnet18", path).fingerprint(pre, "fp32") == key
    assert load_backbone("resnet18", str(copy)).fingerprint(pre, "fp32") == key
    assert load_backbone("resnet18", other).fingerprint(pre, "fp32") != key
    assert load_backbone("resnet18", None).fingerprint(pre, "fp32") != key
    assert from_file.fingerprint(pre, "bf16") != key
    assert from_file.fingerprint(pre.with_image_size(32), "fp32") != key
    assert from_file.fingerprint(Preprocessing(interpolation="bicubic"), "fp32") != key
    random_a = load_backbone("resnet18", None).fingerprint(pre, "fp32")
    random_b = load_backbone("resnet18", None).fingerprint(pre, "fp32")
    assert random_a == random_b


def test_preprocessing_overrides_are_applied_and_unknown_keys_rejected():
    bb = load_backbone("resnet18", None, {"crop_size": 200, "mean": [0.5, 0.5, 0.5]})
    assert bb.preprocessing.crop_size == 200
    assert bb.preprocessing.resize_size == 256
    assert bb.preprocessing.mean == (0.5, 0.5, 0.5)

    with pytest.raises(ValueError, match="crop"):
        load_backbone("resnet18", None, {"crop": 200})
