import pytest
import torch

from coursepkg.engine.runtime import PROFILES, default_device, describe_runtime, get_profile


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
    assert "profile: smoke" in text and "torch" in text
    assert capsys.readouterr().out.strip() == text
