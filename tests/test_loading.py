"""One `mnistlens.load` for every format: a .pt2 exported the default way (batch 1)
gets every method a dynamic-batch one gets, with the same maps."""

import pytest
import torch
from torch import nn

import mnistlens
from mnistlens import attribution as A
from mnistlens.faithfulness import method_completeness_error
from mnistlens.graph import analyze
from mnistlens.loading import conventions
from mnistlens.metrics import predict_logits


def export(model: nn.Module, path, dynamic: bool):
    """Save `model` as a user would: batch 1 (the default) or a dynamic batch."""
    if dynamic:
        example = (torch.zeros(2, 1, 28, 28),)
        program = torch.export.export(
            model.eval(), example, dynamic_shapes=({0: torch.export.Dim("batch")},)
        )
    else:
        program = torch.export.export(model.eval(), (torch.zeros(1, 1, 28, 28),))
    torch.export.save(program, path)
    return path


@pytest.fixture(scope="module")
def programs(tmp_path_factory, shipped):
    """The shipped MLP exported both ways, loaded with `mnistlens.load_model`."""
    folder = tmp_path_factory.mktemp("programs")
    mlp = shipped["mlp"][0]
    return {
        kind: mnistlens.load_model(export(mlp, folder / f"{kind}.pt2", kind == "dynamic"))
        for kind in ("static", "dynamic")
    }


def test_load_model_is_load_and_reads_every_format(programs, shipped):
    assert mnistlens.load_model is mnistlens.load
    for _, meta in programs.values():
        assert meta["format"] == "torch-export"
    assert programs["static"][1]["dynamic_batch"] is False
    assert programs["dynamic"][1]["dynamic_batch"] is True
    _, meta = mnistlens.load_model("cnn.pt")
    assert meta["format"] == "mnistlens-checkpoint" and meta["arch"] == "cnn"


def test_a_batch_one_program_runs_batches_and_gets_every_method(programs, test_set):
    """The static program runs a batch at once (no image-by-image loop), is traced like
    the dynamic one, and so gets DeepLIFT and guided backprop."""
    images = test_set[0][:32]
    static, meta = programs["static"]
    assert meta["per_image"] is False
    assert analyze(static).traced
    assert A.applicable_methods(static) == A.applicable_methods(programs["dynamic"][0])
    assert {"deeplift", "guided_backprop"} <= set(A.applicable_methods(static))
    expected = predict_logits(programs["dynamic"][0], images)
    got = predict_logits(static, images)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_deeplift_is_complete_on_both_programs(programs, test_set, kind):
    """DeepLIFT's rescale rule is exact through linear layers and ReLUs: its maps sum to
    f(x) - f(baseline) on the MLP, exported either way, and the two programs agree."""
    images = test_set[0][::1000]
    model = programs[kind][0]
    target = predict_logits(model, images).argmax(dim=1)
    maps = A.deeplift(model, images, target)
    error = method_completeness_error("deeplift", model, images, maps, target)
    assert float(error.max()) < 1e-4
    other = A.deeplift(programs["dynamic"][0], images, target)
    torch.testing.assert_close(maps, other, rtol=0, atol=1e-4 * float(other.abs().max()))


class NamesTheBatch(nn.Module):
    """A net whose graph fixes the batch at 1 when exported so (`view(1, -1)`)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.view(x.shape[0], -1))


def test_a_program_that_names_its_batch_runs_image_by_image(tmp_path, test_set):
    """When the batch-1 graph cannot take a batch, each image goes through on its own,
    and the outputs are still right."""
    torch.manual_seed(0)
    net = NamesTheBatch().eval()
    path = export(net, tmp_path / "one.pt2", dynamic=False)
    model, meta = mnistlens.load_model(path, input="unit")  # untrained: no convention wins
    assert meta["per_image"] is True
    assert "image by image" in conventions._batch(meta)  # what `inspect` prints
    images = test_set[0][:3]
    torch.testing.assert_close(model(images), net(images), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_inspect_says_how_a_program_takes_its_batch(programs):
    from mnistlens.loading.conventions import describe

    assert describe(*programs["dynamic"])["batch"] == "any"
    assert describe(*programs["static"])["batch"].startswith("exported for 1 image, runs whole")
