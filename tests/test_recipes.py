"""Tests for coursepkg.engine.recipes: every chapter's training settings per run profile."""

import pytest

from coursepkg.engine.recipes import (
    FasterRCNNRecipe,
    FastRCNNRecipe,
    IoUAwareRetinaNetRecipe,
    ObjectnessRecipe,
    RCNNRecipe,
    RetinaNetRecipe,
    TreeCrownsRecipe,
    YOLOv1Recipe,
    fast_rcnn_recipe,
    faster_rcnn_recipe,
    iou_aware_retinanet_recipe,
    objectness_recipe,
    rcnn_recipe,
    retinanet_recipe,
    tree_crowns_recipe,
    yolo_v1_recipe,
)
from coursepkg.engine.runtime import PROFILES

RECIPES = [
    (rcnn_recipe, RCNNRecipe),
    (fast_rcnn_recipe, FastRCNNRecipe),
    (faster_rcnn_recipe, FasterRCNNRecipe),
    (yolo_v1_recipe, YOLOv1Recipe),
    (retinanet_recipe, RetinaNetRecipe),
    (tree_crowns_recipe, TreeCrownsRecipe),
    (iou_aware_retinanet_recipe, IoUAwareRetinaNetRecipe),
]


@pytest.mark.parametrize(("recipe", "kind"), RECIPES)
def test_every_profile_has_a_recipe_that_grows_with_the_profile(recipe, kind):
    smoke, cpu, gpu = (recipe(name) for name in PROFILES)
    for name, r in zip(PROFILES, (smoke, cpu, gpu), strict=True):
        assert isinstance(r, kind) and r.profile == name
    assert smoke.num_train < cpu.num_train < gpu.num_train
    # every profile asserts a floor, smoke included, and a longer run asserts at least as much
    assert smoke.min_map_50 <= cpu.min_map_50 <= gpu.min_map_50


@pytest.mark.parametrize(("recipe", "kind"), RECIPES)
@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_has_a_floor_a_broken_model_misses(recipe, kind, profile):
    """No profile may skip its floor (None), and no floor may be one an untrained model meets.

    Untrained models score at most about 0.02 mAP@0.5 on the chapters' smoke test images (measured
    for each detector when the smoke floors were set: Fast R-CNN 0.019 with its selective-search
    proposals, YOLOv1 0.002 to 0.005, Faster R-CNN 0.0003), and each floor sits above its own
    detector's untrained score; 0.01 is the lowest any profile may ask.
    """
    floor = recipe(profile).min_map_50
    assert isinstance(floor, float), f"{profile} profile of {kind.__name__} has no mAP floor: {floor!r}"
    assert 0.01 <= floor < 1.0


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


def test_objectness_recipe_grows_with_the_profile_and_holds_out_unseen_images():
    smoke, cpu, gpu = (objectness_recipe(name) for name in PROFILES)
    for name, r in zip(PROFILES, (smoke, cpu, gpu), strict=True):
        assert isinstance(r, ObjectnessRecipe) and r.profile == name
        assert r.train_seed != r.val_seed
        assert 0 <= r.bg_iou_thresh <= r.fg_iou_thresh <= 1
    assert smoke.num_train < cpu.num_train < gpu.num_train
    assert smoke.steps < cpu.steps < gpu.steps
    assert 0.5 < smoke.min_auc <= cpu.min_auc <= gpu.min_auc < 1
    with pytest.raises(ValueError, match=r"profile must be one of smoke, cpu, gpu; got"):
        objectness_recipe("tpu")
def test_yolo_v1_recipe_has_a_floor_in_every_profile_and_faster_rcnns_data():
    for name in PROFILES:
        recipe = yolo_v1_recipe(name)
        assert recipe.min_map_50 is not None and recipe.min_map_50 > 0  # smoke too
        assert recipe.train_seed != recipe.val_seed
        other = faster_rcnn_recipe(name)  # the two chapters compare on the same held-out images
        assert (recipe.image_size, recipe.val_seed, recipe.num_val) == (
            other.image_size, other.val_seed, other.num_val
        )
        # the grid's cells are the backbone's stride-16 locations on these images
        assert recipe.config.grid_size * 16 == recipe.image_size[0]
def test_retinanet_recipe_has_a_floor_in_every_profile_and_shorter_ablations():
    floors = [retinanet_recipe(name).min_map_50 for name in PROFILES]
    assert all(f is not None and f > 0 for f in floors)  # a model that does not learn fails smoke too
    assert floors == sorted(floors)
    for name in PROFILES:
        recipe = retinanet_recipe(name)
        assert recipe.train_seed != recipe.val_seed
        assert recipe.ablation_num_train * recipe.ablation_epochs < recipe.num_train * recipe.epochs
        assert recipe.config.num_classes >= 1 and recipe.image_size == (128, 128)


def test_fcos_recipe_grows_with_the_profile_and_has_a_floor_everywhere():
    from coursepkg.engine.recipes import FCOSRecipe, fcos_recipe

    smoke, cpu, gpu = (fcos_recipe(name) for name in PROFILES)
    for name, r in zip(PROFILES, (smoke, cpu, gpu), strict=True):
        assert isinstance(r, FCOSRecipe) and r.profile == name
        assert r.train_seed != r.val_seed
        assert 0 < r.ablation_epochs <= r.epochs and 0 < r.ablation_num_train <= r.num_train
        assert r.config.levels == (3, 4, 5) and len(r.config.size_bounds) == 4
    assert smoke.num_train < cpu.num_train < gpu.num_train
    assert 0 < smoke.min_map_50 <= cpu.min_map_50 <= gpu.min_map_50 < 1
    with pytest.raises(ValueError, match=r"profile must be one of smoke, cpu, gpu; got"):
        fcos_recipe("tpu")


def test_fcos_and_retinanet_share_backbone_pyramid_and_tower_widths():
    """The FCOS paper compares with RetinaNet on one backbone: chapters 13 and 14 do too."""
    from coursepkg.engine.recipes import fcos_recipe
    from coursepkg.models.backbones import MultiScaleBackbone
    from coursepkg.models.fcos import FCOS
    from coursepkg.models.retinanet import RetinaNet

    for name in PROFILES:
        fcos, retinanet = fcos_recipe(name).config, retinanet_recipe(name).config
        assert fcos.backbone_channels == retinanet.backbone_channels
        assert fcos.fpn_channels == retinanet.fpn_channels
        assert fcos.num_convs == retinanet.head_convs and fcos.head_norm == retinanet.head_norm
    # FCOS builds its backbone with the default stem: RetinaNet's must be that one.
    fcos_model, retina_model = FCOS(fcos_recipe("cpu").config), RetinaNet(retinanet_recipe("cpu").config)
    assert isinstance(fcos_model.backbone, MultiScaleBackbone)
    assert [p.shape for p in fcos_model.backbone.parameters()] == [
        p.shape for p in retina_model.backbone.parameters()
    ]


def test_tree_crowns_recipe_asks_for_no_more_tiles_than_the_training_photographs_have():
    from coursepkg.data.tree_crowns import tile_origins

    # (height, width) of the three training photographs of deepforest 2.1.0's data
    sizes = [(2472, 2299), (1035, 1249), (400, 400)]
    for name in PROFILES:
        r = tree_crowns_recipe(name)
        step = r.tile_size - r.train_overlap
        tiles = sum(len(tile_origins(h, r.tile_size, step)) * len(tile_origins(w, r.tile_size, step))
                    for h, w in sizes)
        assert 0 < r.num_train <= tiles, (name, r.num_train, tiles)
        assert r.config.num_classes == 1
    assert tree_crowns_recipe("cpu").num_train == 466  # every tile of the cpu profile's grid


def test_iou_aware_retinanet_recipe_is_retinanets_with_the_iou_head():
    """The chapter compares the two detectors trained alike: every shared field is equal."""
    from dataclasses import fields

    from coursepkg.models.iou_aware_retinanet import IoUAwareRetinaNetConfig
    from coursepkg.models.retinanet import RetinaNetConfig

    for name in PROFILES:
        base, recipe = retinanet_recipe(name), iou_aware_retinanet_recipe(name)
        for f in fields(RetinaNetRecipe):
            if f.name not in ("config", "min_map_50"):
                assert getattr(recipe, f.name) == getattr(base, f.name), f.name
        assert isinstance(recipe.config, IoUAwareRetinaNetConfig)
        for f in fields(RetinaNetConfig):
            assert getattr(recipe.config, f.name) == getattr(base.config, f.name), f.name
        assert all(0.0 <= a <= 1.0 for a in recipe.alphas) and {0.0, 1.0} <= set(recipe.alphas)
