"""The embedded synthetic dataset: deterministic, valid, split-separated, size buckets filled."""
import torch

from detectors.base import validate_target
from experiments.data.synthetic import CLASS_NAMES, SyntheticShapes, bilinear_weights, shape_mask, textured_background


def test_same_seed_same_images_and_other_seed_differs():
    a, b = SyntheticShapes(4, seed=3), SyntheticShapes(4, seed=3)
    c = SyntheticShapes(4, seed=4)
    for i in range(4):
        (ia, ta), (ib, tb) = a[i], b[i]
        assert torch.equal(ia, ib) and torch.equal(ta["boxes"], tb["boxes"])
    assert not torch.equal(a[0][0], c[0][0])


def test_train_and_val_never_share_images():
    train, val = SyntheticShapes(20, split="train"), SyntheticShapes(20, split="val")
    train_images = [train[i][0] for i in range(20)]
    for j in range(20):
        assert not any(torch.equal(val[j][0], t) for t in train_images)


def test_samples_meet_the_contract():
    ds = SyntheticShapes(30, image_size=(240, 320), seed=1)
    assert ds.num_classes == len(CLASS_NAMES) and ds.label_to_category_id[1] == 1
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 240, 320) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1
        validate_target(target, (240, 320), ds.num_classes, where=f"synthetic[{i}]")
        assert target["image_id"] == i and len(target["labels"]) >= 2
        boxes = target["boxes"]
        assert torch.equal(boxes, boxes.round()), "boxes are integer pixel edges"
        torch.testing.assert_close(target["area"], (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))


def test_each_size_bucket_holds_a_fifth_of_the_objects_at_300():
    for split in ("train", "val"):
        ds = SyntheticShapes(200, image_size=300, seed=0, split=split)
        area = torch.cat([ds[i][1]["area"] for i in range(len(ds))])
        small = (area < 32 ** 2).float().mean()
        large = (area > 96 ** 2).float().mean()
        medium = 1 - small - large
        assert min(small, medium, large) >= 0.2, (split, small, medium, large)


def test_box_is_exactly_the_painted_extent():
    """Paint one object on a known background: the changed pixels span exactly its box."""
    for label in range(1, len(CLASS_NAMES) + 1):
        mask = shape_mask(label, 23, 41)
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (0, 22, 0, 40)
    # the dataset's own images: against the background regenerated from the image's seed, the
    # pixels the painter changed span exactly the box (x2, y2 exclusive), for every image
    ds = SyntheticShapes(6, image_size=(96, 128), seed=5, min_objects=1, max_objects=1)
    for i in range(len(ds)):
        image, target = ds[i]
        background = textured_background((96, 128), torch.Generator().manual_seed(ds.image_seed(i)))
        changed = (image - background).abs().amax(dim=0) > 0                # [H, W]
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        x1, y1, x2, y2 = target["boxes"][0].int().tolist()
        assert len(target["boxes"]) == 1
        assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x1, y1, x2, y2), i
        inside = changed[y1:y2, x1:x2]
        assert inside.sum() == shape_mask(int(target["labels"][0]), y2 - y1, x2 - x1).sum()


def test_background_blotches_are_torch_bilinear_upsampling():
    """The rank-6 background uses bilinear weights equal to F.interpolate's (align_corners=False)."""
    g = torch.rand(3, 4, 4)
    for h, w in [(300, 300), (7, 13), (4, 4), (1, 5), (512, 96)]:
        ref = torch.nn.functional.interpolate(g[None], size=(h, w), mode="bilinear",
                                              align_corners=False)[0]
        ours = bilinear_weights(h, 4) @ g @ bilinear_weights(w, 4).T
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_every_object_keeps_min_visible_of_its_pixels():
    """Repaint each image's masks in order: every object stays >= min_visible in view."""
    ds = SyntheticShapes(30, image_size=160, seed=3, min_objects=4, max_objects=8, min_visible=0.6)
    fractions = []
    for i in range(len(ds)):
        target = ds[i][1]
        owner = torch.zeros(160, 160, dtype=torch.int64)
        sizes = []
        for k, (box, label) in enumerate(zip(target["boxes"].long().tolist(),
                                             target["labels"].tolist()), start=1):
            x1, y1, x2, y2 = box
            mask = shape_mask(label, y2 - y1, x2 - x1)
            owner[y1:y2, x1:x2][mask] = k
            sizes.append(int(mask.sum()))
        seen = torch.bincount(owner.flatten(), minlength=len(sizes) + 1)[1:]
        fractions += (seen.float() / torch.tensor(sizes, dtype=torch.float32)).tolist()
    assert min(fractions) >= 0.6
    assert sum(f < 1.0 for f in fractions) > 0  # some objects are partly hidden
