"""Tests for coursepkg.engine.recipes: every chapter's training settings per run profile."""

import pytest

from coursepkg.engine.recipes import (
    FasterRCNNRecipe,
    FastRCNNRecipe,
    RCNNRecipe,
    fast_rcnn_recipe,
    faster_rcnn_recipe,
    rcnn_recipe,
)
from coursepkg.engine.runtime import PROFILES

RECIPES = [(rcnn_recipe, RCNNRecipe), (fast_rcnn_recipe, FastRCNNRecipe), (faster_rcnn_recipe, FasterRCNNRecipe)]


@pytest.mark.parametrize(("recipe", "kind"), RECIPES)
def test_every_profile_has_a_recipe_that_grows_with_the_profile(recipe, kind):
    smoke, cpu, gpu = (recipe(name) for name in PROFILES)
    for name, r in zip(PROFILES, (smoke, cpu, gpu), strict=True):
        assert isinstance(r, kind) and r.profile == name
    assert smoke.num_train < cpu.num_train < gpu.num_train
    # the website's profile asserts a floor, and the GPU's is at least as high
    assert cpu.min_map_50 is not None and gpu.min_map_50 >= cpu.min_map_50
    if smoke.min_map_50 is not None:
        assert smoke.min_map_50 <= cpu.min_map_50


def test_fast_rcnn_uses_the_rcnn_chapters_data():
    """The two chapters compare mAP on the same held-out images and proposals."""
    for name in PROFILES:
        a, b = rcnn_recipe(name), fast_rcnn_recipe(name)
        assert (a.num_train, a.num_test, a.train_seed, a.test_seed) == (
            b.num_train, b.num_test, b.train_seed, b.test_seed
        )


@pytest.mark.parametrize(("recipe", "kind"), RECIPES)
@pytest.mark.parametrize("bad", ["tpu", "CPU", "", None, 1])
def test_unknown_profile_is_refused_by_name(recipe, kind, bad):
    with pytest.raises(ValueError, match=r"profile must be one of smoke, cpu, gpu; got"):
        recipe(bad)


def test_faster_rcnn_recipe_holds_out_unseen_images():
    for name in PROFILES:
        recipe = faster_rcnn_recipe(name)
        assert recipe.train_seed != recipe.val_seed
        assert recipe.config.num_classes >= 1  # a valid FasterRCNNConfig
