"""Several threads at once, as the explorer's sessions are: tracing a model (torch.fx)
in one thread never breaks or changes another thread's forward and backward passes."""

import copy
import threading

import pytest
import torch

from mnistlens import attribution as A
from mnistlens import faithfulness
from mnistlens.graph import analyze, fold_batchnorm, trace, with_relu_modules

ROUNDS = 40


def run_together(*jobs):
    """Run the jobs in threads started together; -> the exceptions they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def guarded(job):
        start.wait()
        try:
            job()
        except BaseException as err:  # noqa: BLE001 - reported to the test
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.mark.slow
def test_tracing_in_one_thread_leaves_another_threads_maps_alone(shipped, test_set):
    """While one thread traces fresh copies of the MLP over and over (what preparing a
    model for a method does), another computes the CNN's saliency maps: every map equals
    the one computed alone, and neither thread raises."""
    cnn, mlp = shipped["cnn"][0], shipped["mlp"][0]
    images = test_set[0][:2]
    alone = A.saliency(cnn, images)
    maps = []

    def tracer():
        for _ in range(ROUNDS):
            net = copy.deepcopy(mlp)
            assert trace(net) is not None
            analyze(net)
            with_relu_modules(net)
            fold_batchnorm(net)

    def explainer():
        for _ in range(ROUNDS):
            maps.append(A.saliency(cnn, images))

    assert run_together(tracer, explainer) == []
    assert len(maps) == ROUNDS
    for m in maps:
        torch.testing.assert_close(m, alone, rtol=0, atol=1e-6 * float(alone.abs().max()))


def test_two_threads_tracing_at_once_each_get_their_own_graph(shipped):
    """Traces from two threads at once: each graph is its own model's, and afterwards
    nn.Module.__call__ is torch's own again (a trace restores what it found)."""
    before = torch.nn.Module.__call__
    graphs = {"mlp": [], "cnn": []}

    def tracing(name):
        def job():
            for _ in range(ROUNDS // 4):
                graphs[name].append(trace(copy.deepcopy(shipped[name][0])))

        return job

    assert run_together(tracing("mlp"), tracing("cnn")) == []
    assert torch.nn.Module.__call__ is before
    for name, found in graphs.items():
        kinds = {type(m).__name__ for g in found for m in g.modules()}
        assert ("Conv2d" in kinds) == (name == "cnn")


def test_a_model_traced_in_one_thread_runs_unchanged_in_another(shipped, test_set):
    """The explorer's sessions share one model object: while one thread traces it,
    another thread's forward pass through the same model reads its real weights (not
    the tracer's stand-ins for them) and gives the logits computed alone. The trace is
    held open (`Pause`) until the other thread's pass is done, so the two always meet."""
    mlp = copy.deepcopy(shipped["mlp"][0])
    images = test_set[0][:4]
    with torch.no_grad():
        alone = mlp(images)
    started, done = threading.Event(), threading.Event()

    class Pause(torch.nn.Module):
        def forward(self, x):
            started.set()
            done.wait(timeout=30)
            return x

    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pause, self.mlp = Pause(), mlp

        def forward(self, x):
            return self.mlp(self.pause(x))

    outputs = []

    def runner():
        try:
            assert started.wait(timeout=30)
            with torch.no_grad():
                outputs.append(mlp(images))
        finally:
            done.set()

    assert run_together(lambda: trace(Shared()), runner) == []
    assert len(outputs) == 1 and isinstance(outputs[0], torch.Tensor)
    torch.testing.assert_close(outputs[0], alone, rtol=0, atol=0)


def test_seeded_computations_in_threads_equal_those_computed_alone(shipped, test_set):
    """The randomization check re-initializes layers from torch's global generator, seeded,
    and SmoothGrad draws its noise from it: three of them at once in threads give what
    each gives alone (the generator is the process's, so seeded blocks take turns)."""
    mlp = shipped["mlp"][0]
    images = test_set[0][:2]
    jobs = {
        "saliency": lambda: faithfulness.randomization_check(mlp, images, "saliency"),
        "ixg": lambda: faithfulness.randomization_check(mlp, images, "input_x_gradient"),
        "smoothgrad": lambda: A.smoothgrad(mlp, images),
    }
    alone = {name: job() for name, job in jobs.items()}
    together = {}

    def running(name):
        def job():
            for _ in range(3):
                together.setdefault(name, []).append(jobs[name]())

        return job

    assert run_together(*(running(name) for name in jobs)) == []
    for name, results in together.items():
        for result in results:
            if isinstance(result, dict):
                assert result == alone[name], name
            else:
                torch.testing.assert_close(result, alone[name], rtol=0, atol=0)


@pytest.mark.slow
def test_threads_sharing_a_model_get_the_maps_each_would_get_alone(shipped, test_set):
    """Saliency, integrated gradients and guided backprop of the same model object in
    threads at once: saliency and IG share one prepared copy (kept per model, never
    hooked), guided backprop hooks a copy of its own; every map equals the one computed
    alone, and no hook is left on the model."""
    cnn = shipped["cnn"][0]
    images = test_set[0][:12]
    methods = ("saliency", "integrated_gradients", "guided_backprop")
    alone = {
        m: A.attribute(m, cnn, images, n_steps=8)
        if m == "integrated_gradients"
        else A.attribute(m, cnn, images)
        for m in methods
    }
    found: dict[str, list] = {m: [] for m in methods}

    def job(method):
        def run():
            options = {"n_steps": 8} if method == "integrated_gradients" else {}
            for _ in range(4):
                found[method].append(A.attribute(method, cnn, images, **options))

        return run

    assert run_together(*(job(m) for m in methods + methods)) == []
    for method in methods:
        scale = float(alone[method].abs().max())
        assert len(found[method]) == 8
        for maps in found[method]:
            assert (maps - alone[method]).abs().max() <= 1e-4 * scale, method
    assert not any(m._forward_hooks or m._backward_hooks for m in cnn.modules())


def test_a_kept_prepared_copy_follows_the_weights_it_was_made_from(test_set):
    """After the weights change in place (an optimizer's step), the next map is the
    changed model's, not the kept copy's: equal to a fresh model with those weights."""
    from mnistlens.models import cnn as build_cnn

    torch.manual_seed(0)
    model = build_cnn(channels=(4, 8), hidden=16).eval()
    images = test_set[0][:6]
    before = A.attribute("saliency", model, images)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-1.5)
    fresh = copy.deepcopy(model)
    after, expected = A.attribute("saliency", model, images), A.attribute("saliency", fresh, images)
    assert not torch.allclose(after, before)
    assert (after - expected).abs().max() <= 1e-5 * expected.abs().max()
