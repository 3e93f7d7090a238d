"""TrainConfig.mixup / --mixup and TrainConfig.cutmix / --cutmix (Zhang et al. 2018, Yun et al. 2019).

References: images that are constant at their own index, so that every mixed pixel says which two
images it came from and in what share; the Beta distribution's published mean and variance; and
torch's own cross-entropy against soft (blended, then smoothed) targets for the loss the loop
optimizes. Each option is shown against the same run without it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resnet_lab.train import EpochStats, TrainConfig, train
from resnet_lab.train.mixing import cutmix_box, mix_batch, mix_rng

from tinytrain import TinyNet, make_bundle

N, H, W = 16, 12, 10


def _indexed() -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is constant at i (two channels), labelled i."""
    y = torch.arange(N)
    return y.float()[:, None, None, None].expand(N, 2, H, W).clone(), y


@pytest.mark.parametrize("seed", range(20))
def test_mixup_blends_every_image_with_its_partner_in_the_share_lam(seed):
    x, y = _indexed()
    mix = mix_batch(x, y, mixup=0.4, cutmix=0.0, rng=mix_rng(seed, 0, 0))
    assert mix.kind == "mixup" and 0 <= mix.lam <= 1
    assert sorted(mix.y_b.tolist()) == y.tolist()  # a permutation: every image is some image's partner
    want = mix.lam * y.double() + (1 - mix.lam) * mix.y_b.double()
    torch.testing.assert_close(mix.x.double(), want[:, None, None, None].expand(N, 2, H, W), rtol=0, atol=1e-5)
    assert torch.equal(x, _indexed()[0])  # the loader's batch is left as it was


@pytest.mark.parametrize("seed", range(40))
def test_cutmix_pastes_one_rectangle_of_the_partner_and_lam_is_the_area_left(seed):
    x, y = _indexed()
    mix = mix_batch(x, y, mixup=0.0, cutmix=1.0, rng=mix_rng(seed, 3, 7))
    assert mix.kind == "cutmix"
    boxes = set()
    for i in range(N):
        if mix.y_b[i] == i:  # paired with itself: nothing changes
            assert torch.equal(mix.x[i], x[i])
            continue
        values = set(mix.x[i].unique().tolist())
        assert values <= {float(i), float(mix.y_b[i])}
        pasted = (mix.x[i, 0] == mix.y_b[i])
        assert torch.equal(pasted, mix.x[i, 1] == mix.y_b[i])  # the same rectangle in every channel
        rows, cols = pasted.any(1).nonzero().flatten(), pasted.any(0).nonzero().flatten()
        if len(rows):  # the pasted pixels fill their bounding box: one rectangle
            top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            assert bool(pasted[top:bottom, left:right].all()) and int(pasted.sum()) == (bottom - top) * (right - left)
            boxes.add((top, bottom, left, right))
        assert mix.lam == pytest.approx(1 - int(pasted.sum()) / (H * W), abs=1e-12)
    assert len(boxes) <= 1  # one rectangle per batch, the same for every image


class _Middle:
    """A stand-in generator whose centre draws fall in the middle of the image."""

    def randrange(self, n: int) -> int:
        return n // 2


@pytest.mark.parametrize("lam", [0.64, 0.5, 0.9, 0.19])
def test_cutmix_box_has_sides_sqrt_one_minus_lam_of_the_images_own(lam):
    # Yun et al. 2019, eq. (2): r_w = W sqrt(1 - lam), r_h = H sqrt(1 - lam), centred at (r_x, r_y); H != W
    # and a centre far from the edges, so nothing is clipped and the area is (1 - lam) of the image's
    height, width = 40, 24
    top, bottom, left, right = cutmix_box(height, width, lam, _Middle())
    side = (1 - lam) ** 0.5
    assert (bottom - top, right - left) == (int(height * side), int(width * side))
    assert (top + bottom) // 2 in (20, 19) and (left + right) // 2 in (12, 11)  # around the centre drawn
    assert 0 < top and bottom < height and 0 < left and right < width


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_lam_follows_beta_alpha_alpha(alpha):
    lams = torch.tensor([mix_batch(*_indexed(), mixup=alpha, cutmix=0.0, rng=mix_rng(0, 0, s)).lam
                         for s in range(4000)], dtype=torch.float64)
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)); 4000 draws put the sample figures within ~0.01
    assert float(lams.mean()) == pytest.approx(0.5, abs=0.02)
    assert float(lams.var()) == pytest.approx(1 / (4 * (2 * alpha + 1)), abs=0.015)


def test_with_both_on_each_batch_uses_one_of_the_two_with_equal_odds():
    kinds = [mix_batch(*_indexed(), mixup=0.2, cutmix=1.0, rng=mix_rng(1, 0, s)).kind for s in range(2000)]
    assert set(kinds) == {"mixup", "cutmix"}
    assert kinds.count("mixup") == pytest.approx(1000, abs=100)  # 4.5 standard deviations


def test_the_draws_depend_on_the_seed_epoch_and_step_only():
    x, y = _indexed()
    a = mix_batch(x, y, mixup=0.4, cutmix=1.0, rng=mix_rng(3, 1, 5))
    b = mix_batch(x, y, mixup=0.4, cutmix=1.0, rng=mix_rng(3, 1, 5))
    assert (a.kind, a.lam) == (b.kind, b.lam) and torch.equal(a.x, b.x) and torch.equal(a.y_b, b.y_b)
    others = [mix_batch(x, y, mixup=0.4, cutmix=1.0, rng=mix_rng(*k)) for k in [(4, 1, 5), (3, 2, 5), (3, 1, 6)]]
    assert all(o.lam != a.lam for o in others)
    assert not any(torch.equal(o.y_b, a.y_b) for o in others)  # the partners too (16! pairings): drawn anew each step


def test_steps_whose_numbers_read_alike_when_run_together_draw_apart():
    # epoch 1 step 15 and epoch 11 step 5 (or seed 1 epoch 23 and seed 12 epoch 3) are different steps: a
    # generator seeded by the digits run together would mix them alike
    for a, b in [((3, 1, 15), (3, 11, 5)), ((1, 23, 4), (12, 3, 4))]:
        assert mix_rng(*a).random() != mix_rng(*b).random(), (a, b)


class RecordingNet(TinyNet):
    """TinyNet that records each training input and the logits it returned."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.seen.append((x.detach().clone(), out.detach().clone()))
        return out


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(epochs=2, lr=0.05, progress=False, plots=False, device="cpu", seed=5), **kw})


def _run(**kw):
    torch.manual_seed(0)
    model, data, losses = RecordingNet(), make_bundle(), []
    train(model, data, _cfg(**kw), step_callbacks=[lambda info: losses.append(float(info["loss"]))])
    return model, data, losses


@pytest.mark.parametrize("options", [{"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 0.4, "cutmix": 1.0}],
                         ids=["mixup", "cutmix", "both"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_loop_trains_on_the_mixed_batch_with_the_soft_target_cross_entropy(options, smoothing):
    model, data, losses = _run(label_smoothing=smoothing, **options)
    steps = len(data.train)
    assert len(model.seen) == len(losses) == 2 * steps
    kinds = set()
    for epoch in range(2):
        data.train.set_epoch(epoch)
        for step, (x, y) in enumerate(data.train):
            mix = mix_batch(x, y, mixup=options.get("mixup", 0.0), cutmix=options.get("cutmix", 0.0),
                            rng=mix_rng(5, epoch, step))
            kinds.add(mix.kind)
            seen, logits = model.seen[epoch * steps + step]
            assert torch.equal(seen, mix.x)
            assert not torch.equal(seen, x)
            # torch's cross-entropy against the blended one-hot targets, smoothed by torch itself
            soft = mix.lam * F.one_hot(y, 3).double() + (1 - mix.lam) * F.one_hot(mix.y_b, 3).double()
            want = F.cross_entropy(logits.double(), soft, label_smoothing=smoothing)
            assert losses[epoch * steps + step] == pytest.approx(float(want), rel=1e-5)
    assert len(kinds) == len(options)  # with both on, both were used


def test_without_mixing_the_model_trains_on_the_loaders_batches_and_ends_elsewhere():
    plain, data, _ = _run()
    data.train.set_epoch(0)
    assert torch.equal(plain.seen[0][0], next(iter(data.train))[0])
    for options in ({"mixup": 0.4}, {"cutmix": 1.0}):
        mixed, _, _ = _run(**options)
        assert not torch.equal(mixed.fc.weight, plain.fc.weight), options


def test_training_accuracy_counts_the_label_with_the_larger_share():
    x, y = _indexed()
    mix = mix_batch(x, y, mixup=0.4, cutmix=0.0, rng=mix_rng(0, 0, 0))
    moved = mix.y_b != y
    for lam, right in ((0.3, mix.y_b), (0.7, y)):
        mix_at = type(mix)(mix.x, mix.y_b, lam, mix.kind)
        logits = F.one_hot(right, N).float()
        stats = EpochStats.zeros(torch.device("cpu"))
        stats.add(torch.tensor(1.0), logits, y, 0.1, mix_at)
        assert int(stats.correct) == N
        wrong = EpochStats.zeros(torch.device("cpu"))
        wrong.add(torch.tensor(1.0), F.one_hot(torch.where(right == y, mix.y_b, y), N).float(), y, 0.1, mix_at)
        assert int(wrong.correct) == N - int(moved.sum())
        # the plain (unsmoothed) loss is blended as the objective is
        soft = lam * F.one_hot(y, N).double() + (1 - lam) * F.one_hot(mix.y_b, N).double()
        assert float(stats.plain_sum) == pytest.approx(N * float(F.cross_entropy(logits.double(), soft)), rel=1e-6)


def test_training_accuracy_counts_the_images_own_label_on_an_even_share():
    # lam exactly 0.5 (a CutMix box of half the image): the tie goes to the image's own label
    x, y = _indexed()
    mix = mix_batch(x, y, mixup=0.4, cutmix=0.0, rng=mix_rng(0, 0, 0))
    moved = mix.y_b != y
    assert moved.any()
    even = type(mix)(mix.x, mix.y_b, 0.5, mix.kind)
    assert torch.equal(even.major(y), y)
    for right, want in ((y, N), (mix.y_b, N - int(moved.sum()))):
        stats = EpochStats.zeros(torch.device("cpu"))
        stats.add(torch.tensor(1.0), F.one_hot(right, N).float(), y, 0.1, even)
        assert int(stats.correct) == want


@pytest.mark.parametrize("field", ["mixup", "cutmix"])
@pytest.mark.parametrize("value", [-0.5, float("nan"), float("inf")])
def test_a_bad_alpha_is_refused_naming_the_flag(field, value):
    with pytest.raises(ValueError, match=rf"{field} \(--{field}\) must be a Beta\(alpha, alpha\) concentration >= 0"):
        TrainConfig(**{field: value})


def test_cutmix_pastes_the_partners_pixels_at_the_same_place():
    # Yun et al. 2019, eq. (1): x~ = M * x_A + (1 - M) * x_B, one mask M for both images, so each
    # pixel is the image's own or its partner's at that same pixel; every pixel here is unique.
    y = torch.arange(N)
    x = (y[:, None, None, None] * 1000 + torch.arange(2 * H * W).reshape(1, 2, H, W)).float()
    pasted_some = False
    for seed in range(10):
        mix = mix_batch(x, y, mixup=0.0, cutmix=1.0, rng=mix_rng(seed, 0, 0))
        own, partner = mix.x == x, mix.x == x[mix.y_b]
        assert bool((own | partner).all()), seed
        pasted_some |= bool((partner & ~own).any())
    assert pasted_some


def test_cutmix_box_is_centred_at_a_uniform_pixel_and_clipped_to_the_image():
    # Yun et al. 2019: the centre (r_x, r_y) is uniform over the image and the box is cropped at its
    # edges. With lam = 1 the box has no size and sits at its centre; with sides 8 of a 10 px square,
    # it escapes clipping only when the centre is at 4, 5 or 6 on both axes: (3 / 10)^2 = 9% of draws.
    rng = mix_rng(0, 0, 0)
    centres = [cutmix_box(10, 10, 1.0, rng) for _ in range(4000)]
    assert all(top == bottom and left == right for top, bottom, left, right in centres)
    for axis in (0, 2):
        counts = torch.bincount(torch.tensor([c[axis] for c in centres]), minlength=11)
        assert counts[10] == 0 and int(counts[:10].min()) > 0.7 * 400 and int(counts[:10].max()) < 1.3 * 400, counts
    boxes = [cutmix_box(10, 10, 0.36, rng) for _ in range(4000)]
    whole = sum((bottom - top, right - left) == (8, 8) for top, bottom, left, right in boxes)
    assert whole / 4000 == pytest.approx(0.09, abs=0.02)
    assert all(0 <= top < bottom <= 10 and 0 <= left < right <= 10 for top, bottom, left, right in boxes)


def test_mix_batch_with_both_off_is_refused_naming_the_values_and_the_way_out():
    # A caller of the library function gets the options' values, not betavariate's "alpha and beta must be > 0.0"
    with pytest.raises(ValueError, match=r"mix_batch needs mixup or cutmix > 0 .*got mixup=0.0, cutmix=0.0"):
        mix_batch(*_indexed(), mixup=0.0, cutmix=0.0, rng=mix_rng(0, 0, 0))
