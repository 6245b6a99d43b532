"""Your own model: PyTorch's examples/mnist style and a raw-pixel MLP, trained briefly,
saved as their users save them, loaded, adapted, explained and measured."""

import inspect

import nets
import pytest
import torch
import torch.nn.functional as F

import mnistlens
from mnistlens import MnistlensError, explain, faithfulness
from mnistlens import attribution as A
from mnistlens.graph import analyze
from mnistlens.internals.activations import layer_activations
from mnistlens.loading import conventions
from mnistlens.metrics import predict_logits


def _train(model, inputs, labels, log_probs: bool, epochs: int = 1):
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(inputs), generator=gen).split(128):
            out = model(inputs[idx])
            loss = F.nll_loss(out, labels[idx]) if log_probs else F.cross_entropy(out, labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """nets.SmallNet (examples/mnist's Net, narrower) and nets.RawMLP, trained for a
    second or two on 5,000 training images and saved: the Net as state_dict + source and
    as a .pt2 program, the MLP as state_dict + source."""
    from mnistlens.data import load_mnist

    folder = tmp_path_factory.mktemp("user")
    source = folder / "net.py"
    source.write_text(inspect.getsource(nets))  # the user's own file
    images, labels = load_mnist("train")
    images, labels = images[:5_000], labels[:5_000]
    torch.manual_seed(0)
    net = _train(nets.SmallNet(), (images - 0.1307) / 0.3081, labels, log_probs=True)
    mlp = _train(nets.RawMLP(), images.flatten(1) * 255, labels, log_probs=False)
    torch.save(net.state_dict(), folder / "net.pt")
    torch.save(mlp.state_dict(), folder / "mlp.pt")
    program = torch.export.export(
        net, (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, folder / "net.pt2")
    return {"folder": folder, "source": source, "net": net, "mlp": mlp}


@pytest.fixture(scope="module")
def loaded(user_files):
    src = user_files["source"]
    folder = user_files["folder"]
    return {
        "net": mnistlens.load(folder / "net.pt", model_code=f"{src}:SmallNet"),
        "pt2": mnistlens.load(folder / "net.pt2"),
        "mlp": mnistlens.load(folder / "mlp.pt", model_code=f"{src}:RawMLP"),
    }


def test_conventions_are_detected_and_reported(loaded):
    for key in ("net", "pt2"):
        _, meta = loaded[key]
        assert meta["input"] == "mnist-normalized", meta
        assert meta["outputs"] == "log_probabilities" and meta["output_removed"]
        accuracies = meta["input_accuracies"]
        assert accuracies["mnist-normalized"] > max(accuracies["unit"], accuracies["0-255"])
        assert "lowest loss" in meta["input_reason"]
    _, meta = loaded["mlp"]
    assert meta["input"] == "0-255" and meta["outputs"] == "logits"
    assert not meta["output_removed"] and meta["input_shape"] == [784]


def test_predictions_equal_the_raw_models(loaded, user_files, test_set):
    images = test_set[0][:64]
    with torch.no_grad():
        raw_net = user_files["net"]((images - 0.1307) / 0.3081)
        raw_mlp = user_files["mlp"](images.flatten(1) * 255)
    for key in ("net", "pt2"):
        model, _ = loaded[key]
        logits = predict_logits(model, images)
        # Logits now (the log_softmax was removed): log_softmax of them is the raw output.
        torch.testing.assert_close(logits.log_softmax(dim=1), raw_net, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(predict_logits(loaded["mlp"][0], images), raw_mlp)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["net", "pt2", "mlp"])
def test_explain_units_and_measure_work(loaded, test_set, key):
    model, _ = loaded[key]
    images = test_set[0][:3]
    methods = A.applicable_methods(model)
    assert {"saliency", "integrated_gradients", "deeplift", "guided_backprop"} <= set(methods)
    if key != "mlp":
        assert "grad_cam" in methods  # its default layer: the ReLU after the last conv
    fast = {
        "integrated_gradients": {"n_steps": 16},
        "smoothgrad": {"n_samples": 3},
        "gradient_shap": {"n_samples": 4},
        "occlusion": {"window": 7, "stride": 7},
    }
    result = explain.explain(
        model, images, methods, measure=True, **{m: fast[m] for m in fast if m in methods}
    )
    for name in methods:
        maps = result.maps[name]
        assert maps.shape == (3, 1, 28, 28) and torch.isfinite(maps).all(), name
    hidden = analyze(model).hidden_layers
    assert hidden, "functional ReLUs became modules, so hidden layers can be read"
    assert layer_activations(model, images, hidden[-1]).shape[0] == 3
    report, _ = faithfulness.compare_methods(model, test_set[0][:20], ["saliency", "ig"])
    assert report["integrated_gradients"]["deletion_auc"] < report["random"]["deletion_auc"]


@pytest.mark.parametrize("key", ["net", "pt2", "mlp"])
def test_deeplift_is_complete_on_the_users_model(loaded, test_set, key):
    """DeepLIFT's summation rule holds on the adapted model (logits, ReLU modules); the
    Net's max pooling (Captum's rule for it) costs a little, so the bound is loose there."""
    model, _ = loaded[key]
    images = test_set[0][:16]
    target = predict_logits(model, images).argmax(dim=1)
    maps = A.deeplift(model, images, target)
    error = faithfulness.method_completeness_error("deeplift", model, images, maps, target)
    assert error.median() < (1e-3 if key == "mlp" else 0.05), error


def test_input_convention_given_or_refused(user_files, test_set):
    src, folder = user_files["source"], user_files["folder"]
    model, meta = mnistlens.load(folder / "mlp.pt", model_code=f"{src}:RawMLP", input="unit")
    assert meta["input"] == "unit" and meta["input_reason"] == "chosen by the user"
    with pytest.raises(MnistlensError, match="unknown input convention 'bytes'"):
        mnistlens.load(folder / "mlp.pt", model_code=f"{src}:RawMLP", input="bytes")
    torch.manual_seed(0)
    untrained = folder / "untrained.pt"
    torch.save(nets.RawMLP().state_dict(), untrained)
    with pytest.raises(MnistlensError, match="no input convention gives the model 50%"):
        mnistlens.load(untrained, model_code=f"{src}:RawMLP")


def test_a_shipped_checkpoint_passes_through(shipped):
    model, meta = mnistlens.load("cnn.pt")
    assert meta["format"] == "mnistlens-checkpoint" and meta["input"] == "unit"
    assert meta["test_accuracy"] == shipped["cnn"][1]["test_accuracy"]
    with pytest.raises(MnistlensError, match="drop --input"):
        mnistlens.load("cnn.pt", input="0-255")


def test_describe_says_what_was_detected(loaded):
    model, meta = loaded["pt2"]
    facts = conventions.describe(model, meta)
    assert facts["format"] == "torch-export" and facts["input"] == "mnist-normalized"
    assert facts["outputs"] == "log_probabilities" and facts["output_removed"]
    assert facts["relu_modules"] and facts["cam_layer"] is not None
    kinds = [layer["kind"] for layer in facts["layers"]]
    assert kinds.count("conv") == 2 and kinds.count("relu") == 3 and "softmax" not in kinds
    assert facts["parameters"] == sum(p.numel() for p in model.parameters()) > 10_000
    assert 0.8 < facts["test_accuracy"] <= 1
    assert "grad_cam" in facts["methods"] and not facts["methods_skipped"]
    mlp_facts = conventions.describe(*loaded["mlp"])
    assert "grad_cam" in mlp_facts["methods_skipped"]
