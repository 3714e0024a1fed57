import pytest
import torch

from coursepkg.engine import runtime
from coursepkg.engine.runtime import (
    PROFILES,
    default_device,
    describe_runtime,
    get_profile,
    resolve_device,
)


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    assert get_profile().name == "smoke"
    monkeypatch.setenv("COURSE_PROFILE", " CPU ")
    assert get_profile().name == "cpu"


def test_profile_defaults_to_hardware(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert get_profile().name == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_profile().name == "gpu"


def test_explicit_name_wins(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "gpu")
    assert get_profile("smoke").name == "smoke"


@pytest.mark.parametrize("name", PROFILES)
def test_pick(name):
    assert get_profile(name).pick(smoke=1, cpu=2, gpu=3) == PROFILES.index(name) + 1


def test_unknown_profile_is_an_error(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "fast")
    with pytest.raises(ValueError, match=r"\$COURSE_PROFILE must be one of smoke, cpu, gpu; got 'fast'"):
        get_profile()
    with pytest.raises(ValueError, match="name must be one of"):
        get_profile("tpu")


def test_default_device_and_description(capsys):
    assert default_device().type in {"cuda", "mps", "cpu"}
    text = describe_runtime(get_profile("smoke"))
    assert "profile: smoke" in text and f"torch {torch.__version__}" in text
    assert capsys.readouterr().out.strip() == text
    assert "\n" not in text  # the setup cell prints one line


def test_description_names_the_gpu_it_found(monkeypatch):
    """What a Colab learner reads after the setup cell, with and without the GPU runtime."""
    import sys

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Tesla T4")
    assert describe_runtime(get_profile("gpu")).startswith("GPU found: cuda (Tesla T4) | profile: gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert describe_runtime(get_profile("cpu")).startswith("no GPU found, running on cpu | profile: cpu")
    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    assert "Runtime > Change runtime type > GPU" in describe_runtime(get_profile("cpu"))


def test_resolve_device_accepts_what_exists(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None) == default_device()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")


def test_resolve_device_refuses_what_is_missing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        ValueError,
        match=r"^device='cuda' but CUDA is not available on this machine \(torch.cuda.is_available\(\) "
        r"is False\); pass device='cpu', or device=None for the best device this machine has$",
    ):
        resolve_device("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^model_device='mps' but Apple's MPS is not available"):
        resolve_device("mps", name="model_device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(
        ValueError, match=r"device='cuda:3' but this machine has 1 CUDA device\(s\), cuda:0 to cuda:0"
    ):
        resolve_device(torch.device("cuda", 3))
    with pytest.raises(ValueError, match=r"device must be a device such as 'cpu', .* got 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(TypeError, match="device must be a str such as 'cpu' or 'cuda', .* got int"):
        resolve_device(0)


def test_best_time_ms_runs_repeats_times_and_returns_the_fastest(monkeypatch):
    import coursepkg.engine.runtime as runtime

    calls = []
    clock = iter([0.0, 0.5, 1.0, 1.1, 2.0, 2.3])  # runs of 500 ms, 100 ms and 300 ms
    monkeypatch.setattr(runtime.time, "perf_counter", lambda: next(clock))

    def fn():
        calls.append(1)
        return len(calls)

    result, ms = runtime.best_time_ms(fn, repeats=3)
    assert len(calls) == 3 and result == 3
    assert abs(ms - 100.0) < 1e-9
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="repeats must be an int >= 1"):
            runtime.best_time_ms(fn, repeats=bad)


def test_compare_step_times_alternates_and_reports_medians(monkeypatch):
    calls = []
    clock = iter(range(0, 10_000, 1))  # perf_counter: 1 s per read; a step spans one tick
    monkeypatch.setattr(runtime.time, "perf_counter", lambda: float(next(clock)))
    monkeypatch.setattr(runtime.time, "process_time", lambda: 0.0)
    row = runtime.compare_step_times(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        repeats=3, warmup=1, images_per_step=4,
    )
    assert calls == ["a", "b"] * 4  # one warm-up round, then three timed rounds, alternating
    assert row["a_ms"] == row["b_ms"] == row["a_best_ms"] == 1000.0
    assert row["a_img_s"] == 4.0 and row["b_cpu_ms"] == 0.0
    assert set(row) == {f"{n}_{k}" for n in "ab" for k in ("ms", "best_ms", "cpu_ms", "img_s")}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": {}}, "non-empty mapping"),
        ({"steps": {"a": 3}}, "callables"),
        ({"repeats": 0}, "repeats must be an int >= 1"),
        ({"warmup": -1}, "warmup must be an int >= 0"),
        ({"images_per_step": 1.5}, "images_per_step must be an int >= 1"),
    ],
)
def test_compare_step_times_rejects_bad_arguments(kwargs, message):
    args = {"steps": {"a": lambda: None}, "repeats": 1, "warmup": 0, "images_per_step": 1, **kwargs}
    with pytest.raises((TypeError, ValueError), match=message):
        runtime.compare_step_times(**args)
