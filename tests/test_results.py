"""Results kept on disk (mnistlens.results) and the ones shipped beside the checkpoints.

The store: computed once and read back as it was, keyed by what it depends on, files
that are not its own recomputed (never run), the shipped cache read and never written.
The shipped cache itself (checkpoints/cache, `mnistlens app --precompute`): it answers
every model-level entry of the explorer's first views, and what it holds is what the
code computes now.
"""

import importlib
import os
import pickle
import warnings

import pytest
import torch

from mnistlens import results, typicality
from mnistlens.influence import cache as influence_cache
from mnistlens.paths import SHIPPED_CACHE_ENV_VAR

from conftest import CHECKPOINTS


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """An empty user cache and an empty shipped one: -> (user cache, shipped cache)."""
    user, shipped = tmp_path / "user", tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(user))
    monkeypatch.setenv(SHIPPED_CACHE_ENV_VAR, str(shipped))
    return user / "mnistlens", shipped


class Counting:
    """A computation that counts its calls and returns a value of every kept kind."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return {
            "verdict": "pass",
            "cascade": {"fc2": 0.25, "fc1": -0.5},
            "curves": torch.linspace(0, 1, 29).reshape(1, 29),
            "png": b"\x89PNG\r\n",
            "pair": (3, None, True),
            7: [1.5, "x"],
        }


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


def test_a_result_is_computed_once_and_read_back_as_it_was(caches):
    compute = Counting()
    first = results.kept("demo", ("weights", 1), compute)
    again = results.kept("demo", ("weights", 1), compute)
    assert compute.calls == 1 and same(first, compute()) and same(again, first)
    assert [p.parent.name for p in caches[0].rglob("*.pt")] == ["results"]


def test_the_key_separates_arguments_kinds_library_versions_and_code(caches, monkeypatch):
    compute = Counting()
    results.kept("demo", ("weights", 1), compute)
    results.kept("demo", ("weights", 2), compute)  # another argument (or weights)
    results.kept("other", ("weights", 1), compute)  # another function
    assert compute.calls == 3
    monkeypatch.setattr(results, "__version__", "99.0")  # a new release reads none of these
    results.kept("demo", ("weights", 1), compute)
    assert compute.calls == 4
    monkeypatch.setattr(results, "code_version", lambda: "c0de" * 16)  # nor changed code
    results.kept("demo", ("weights", 1), compute)
    assert compute.calls == 5
    assert len(list(caches[0].rglob("*.pt"))) == 5


def test_a_file_that_is_not_a_kept_result_is_recomputed_never_run(caches, tmp_path):
    compute = Counting()
    key = ("weights", 1)
    path = results.user_path("demo", key)
    path.parent.mkdir(parents=True)
    ran = tmp_path / "ran"

    class Payload:  # what a malicious pickle would do on loading: run code
        def __reduce__(self):
            return (os.system, (f"touch {ran}",))

    header = {"format": results.FORMAT, "key": results.digest("demo", key)}
    doctored = [
        pickle.dumps({**header, "value": Payload()}),
        b"not a zip file at all",
    ]
    for content in doctored:
        path.write_bytes(content)
        with pytest.warns(UserWarning, match="ignoring kept result"):
            value = results.kept("demo", key, compute)
        assert same(value, compute()) and not ran.exists()
    # A sound file made for another key (copied over, renamed) is not read as this one.
    results.kept("demo", ("weights", 2), lambda: {"verdict": "fail"})
    path.write_bytes(results.user_path("demo", ("weights", 2)).read_bytes())
    with pytest.warns(UserWarning, match="made for other weights"):
        assert results.kept("demo", key, compute)["verdict"] == "pass"


def test_a_result_that_could_not_be_read_back_is_refused_when_kept(caches):
    import numpy as np

    with pytest.raises(TypeError, match="demo result cannot be read back safely"):
        results.kept("demo", ("k",), lambda: {"scores": np.zeros(3)})
    assert not list(caches[0].rglob("*.pt"))


def test_the_shipped_cache_answers_first_and_is_never_written(caches):
    user, shipped = caches
    compute = Counting()
    results.kept("demo", ("weights", 1), compute)  # into the user's cache ...
    (shipped / "results").mkdir()
    made = results.user_path("demo", ("weights", 1))
    made.rename(results.shipped_path("demo", ("weights", 1)))  # ... now only shipped
    value = results.kept("demo", ("weights", 1), compute)
    assert compute.calls == 1 and same(value, compute())
    assert not list(user.rglob("*.pt"))  # read from there, not copied
    results.kept("demo", ("weights", 2), compute)  # a miss is written to the user's
    assert len(list(shipped.rglob("*.pt"))) == 1 and len(list(user.rglob("*.pt"))) == 1


def test_without_a_shipped_cache_everything_is_computed(caches, monkeypatch):
    compute = Counting()
    results.kept("demo", ("weights", 1), compute)
    made = results.user_path("demo", ("weights", 1))
    (caches[1] / "results").mkdir()
    made.rename(results.shipped_path("demo", ("weights", 1)))
    monkeypatch.setenv(SHIPPED_CACHE_ENV_VAR, "")
    results.kept("demo", ("weights", 1), compute)
    assert compute.calls == 2


def test_an_unwritable_cache_costs_only_the_computation(caches, tmp_path, monkeypatch):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    compute = Counting()
    with pytest.warns(UserWarning, match="could not keep a demo result"):
        value = results.kept("demo", ("weights", 1), compute)
    assert same(value, compute())


@pytest.mark.slow
def test_a_detector_fit_is_read_from_the_shipped_cache(caches, shipped, test_set):
    """The digit verdict's fit (one pass over 4,000 training digits) comes from the
    shipped cache when the user's has none: the same verdicts, nothing built."""
    user, shipped_dir = caches
    model = shipped["linear"][0]
    influence_cache.clear_memory_cache()  # a fit made by an earlier test in this process
    built = typicality.fit_detector(model)
    assert built.source == "built"
    for path in user.rglob("typicality-*.pt"):  # move the fit to the shipped cache
        target = shipped_dir / path.relative_to(user)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    influence_cache.clear_memory_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sound file: no "ignoring cache file"
        found = typicality.fit_detector(model)
    assert found.source == "disk" and not list(user.rglob("typicality-*.pt"))
    assert torch.equal(found.calibration, built.calibration)
    images = test_set[0][:50]
    assert torch.equal(found.judge(model, images).score, built.judge(model, images).score)


def test_the_explorer_keeps_what_every_user_sees_not_what_one_uploads(
    apps_on_path, caches, monkeypatch
):
    """apps/kept.py: a shipped model's result is kept (keyed by its weights: another
    model is another file) and read back; an upload's, or one made from a user's own
    pictures, is computed every time and never written."""
    kept = importlib.import_module("kept")
    session = importlib.import_module("session")
    calls = []

    @kept.kept("model_name", unless=("pictures",))
    def summary(model_name: str, pictures: tuple = ()) -> dict:
        calls.append(model_name)
        return {"parameters": sum(p.numel() for p in session.get_model(model_name)[0].parameters())}

    assert summary("cnn.pt") == summary("cnn.pt") and calls == ["cnn.pt"]
    summary("mlp.pt")
    assert len(list(caches[0].rglob("summary-*.pt"))) == 2
    summary("cnn.pt", (("mine.png", b"..."),))
    summary("cnn.pt", (("mine.png", b"..."),))
    upload = "yours: net.pt (0123456789)"
    own = session._OUTSIDE.__dict__.setdefault("models", {})  # this thread's models
    monkeypatch.setitem(own, upload, session.get_model("linear.pt"))
    summary(upload)
    summary(upload)
    assert calls == ["cnn.pt", "mlp.pt", "cnn.pt", "cnn.pt", upload, upload]
    assert len(list(caches[0].rglob("summary-*.pt"))) == 2


# ---------------------------------------------------------------- the shipped cache

SHIPPED = CHECKPOINTS / "cache"


def cheapest_of_each_kind() -> list:
    """Of each kind of shipped result (each kept function), the one that took the least
    time to compute: checking them all would cost as much as the precomputation."""
    cheapest = {}
    for path in sorted((SHIPPED / "results").glob("*.pt")):
        payload = torch.load(path, weights_only=True)
        if payload["call"] is None:  # the library's own (its test is below)
            continue
        kind, seconds = payload["kind"], payload["seconds"]
        if kind not in cheapest or seconds < cheapest[kind][1]:
            cheapest[kind] = (path, seconds)
    return [path for path, _ in cheapest.values()]


def close(shipped, now, where: str = "value") -> None:
    """Assert a shipped result equals a recomputation: numbers to a tolerance scaled to
    them (CPU kernels differ in the last bits), text exactly, figures by their size."""
    if isinstance(shipped, torch.Tensor):
        assert isinstance(now, torch.Tensor) and shipped.shape == now.shape, where
        scale = float(shipped.abs().max()) if shipped.numel() else 0.0
        tolerance = 1e-4 * scale + 1e-6
        assert torch.allclose(shipped.double(), now.double(), rtol=1e-3, atol=tolerance), where
    elif isinstance(shipped, float):
        assert now == pytest.approx(shipped, rel=1e-3, abs=1e-5), where
    elif isinstance(shipped, bytes) and shipped.startswith(b"\x89PNG"):
        assert isinstance(now, bytes) and now[16:24] == shipped[16:24], where  # width, height
    elif isinstance(shipped, dict):
        assert isinstance(now, dict) and shipped.keys() == now.keys(), where
        for key in shipped:
            if str(key).endswith(("per_second", "seconds")):  # timed: the machine's, not the code's
                continue
            close(shipped[key], now[key], f"{where}[{key!r}]")
    elif isinstance(shipped, (list, tuple)):
        assert type(now) is type(shipped) and len(now) == len(shipped), where
        for i, (a, b) in enumerate(zip(shipped, now, strict=True)):
            close(a, b, f"{where}[{i}]")
    else:
        assert now == shipped, where


@pytest.mark.slow
@pytest.mark.parametrize("path", cheapest_of_each_kind(), ids=lambda p: p.stem[:-24])
def test_a_shipped_result_is_what_the_code_computes_now(path, apps_on_path, caches):
    """A shipped result of each kind, computed again from the call kept beside it: the
    same numbers, text and figure sizes. What it is computed from (the Trust page's
    figures from its measurements, ...) comes from the shipped cache, and is checked by
    its own case here. A failure means the code now computes something else: run
    `mnistlens app --precompute`."""
    import importlib
    import shutil

    import streamlit as st

    others = caches[1] / "others"  # the shipped cache without this result
    shutil.copytree(SHIPPED, others, ignore=lambda _, names: [n for n in names if n == path.name])
    os.environ[SHIPPED_CACHE_ENV_VAR] = str(others)  # (restored by the fixture's monkeypatch)
    st.cache_data.clear()
    payload = torch.load(path, weights_only=True)
    call = payload["call"]
    function = getattr(importlib.import_module(call["module"]), call["function"])
    close(payload["value"], function(**call["arguments"]), call["function"])
    # Computed now, and kept under the shipped file's name: the same key (weights, data,
    # arguments, version) as when it was shipped.
    assert [results.as_shipped(p) for p in (caches[0] / "results").glob("*.pt")] == [path.name]


@pytest.mark.slow
def test_a_fresh_server_finds_its_first_views_results_shipped(apps_on_path, caches, monkeypatch):
    """A fresh server on a fresh machine (empty user cache, the shipped cache as it is in
    the repository) computes none of the model-level results of its pages' first views
    (apps/warm.py's steps): each is read from checkpoints/cache, the detector's fit too."""
    import importlib

    import streamlit as st

    monkeypatch.setenv(SHIPPED_CACHE_ENV_VAR, str(SHIPPED))
    st.cache_data.clear()
    influence_cache.clear_memory_cache()
    computed, read = [], set()
    monkeypatch.setattr(results, "store", lambda kind, *_: computed.append(kind))
    real_lookup = results.lookup

    def lookup(kind, key):
        found, value = real_lookup(kind, key)
        if found:
            read.add(results.shipped_path(kind, key).name)
        return found, value

    monkeypatch.setattr(results, "lookup", lookup)
    built = []
    real_build = typicality.verdict._build
    monkeypatch.setattr(
        typicality.verdict, "_build", lambda *a: built.append(a[1]) or real_build(*a)
    )
    warm = importlib.import_module("warm")
    for _, step in warm.steps():
        step()
    assert computed == [] and built == []
    assert read == {p.name for p in (SHIPPED / "results").glob("*.pt")}  # each one used
    assert not list(caches[0].rglob("*.pt"))
