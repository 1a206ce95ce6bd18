import numpy as np
import pytest
import torch

from skelpipe.skeleton.noise import MODES, _mix, instance_seeds, occlude, occlusion_mask, sample_keys


def _splitmix_ref(x: np.ndarray) -> np.ndarray:
    """splitmix64 in numpy uint64, the textbook way, to check the int64 torch version."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def test_hash_matches_reference_splitmix64():
    x = np.array([0, 1, 2, 12345, 2**63 - 1, 2**63, 2**64 - 1], dtype=np.uint64)
    got = _mix(torch.from_numpy(x.view(np.int64))).numpy().view(np.uint64)
    np.testing.assert_array_equal(got, _splitmix_ref(x))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("p", [0.1, 0.3, 0.6])
def test_rate_within_one_percent(mode, p):
    seeds = instance_seeds(7, np.arange(400), "eval", "test")
    mask = occlusion_mask(seeds, p, (60, 17, 2), mode)
    assert mask.shape == (400, 1, 60, 17, 2) and mask.dtype == torch.bool
    rate = 1 - mask.float().mean().item()
    assert abs(rate - p) < 0.01, rate


def test_p_zero_and_one():
    seeds = np.arange(5)
    for mode in MODES:
        assert occlusion_mask(seeds, 0.0, (10, 4, 2), mode).all()
        assert not occlusion_mask(seeds, 1.0, (10, 4, 2), mode).any()


def test_track_mode_whole_sequence():
    mask = occlusion_mask(np.arange(200), 0.4, (50, 17, 2), "track")
    per_track = mask.float().mean(dim=2)  # (N, 1, V, M): 0 or 1 only
    assert set(per_track.unique().tolist()) == {0.0, 1.0}


def test_joint_mode_varies_over_frames():
    mask = occlusion_mask(np.arange(20), 0.4, (50, 17, 2), "joint")
    per_track = mask.float().mean(dim=2)
    assert ((per_track > 0) & (per_track < 1)).float().mean() > 0.9


def test_block_mode_makes_contiguous_runs():
    T, L = 120, 15
    mask = occlusion_mask(np.arange(100), 0.3, (T, 17, 2), "block", block_len=L)
    m = mask[:, 0].permute(0, 2, 3, 1).reshape(-1, T).numpy()
    # zeroed runs are whole blocks: run lengths are multiples of L except at the two ends
    for row in m[:200]:
        edges = np.flatnonzero(np.diff(np.r_[1, row.astype(int), 1]))
        starts, ends = edges[0::2], edges[1::2]
        inner = (starts > 0) & (ends < T)
        assert np.all((ends - starts)[inner] % L == 0)
    # the phase differs between joints, so block boundaries do not all line up
    assert len({tuple(np.flatnonzero(np.diff(r.astype(int)))) for r in m[:50]}) > 10


@pytest.mark.parametrize("mode", MODES)
def test_deterministic_per_seed_and_batch_independent(mode):
    a = occlusion_mask(np.array([3, 4, 5]), 0.5, (30, 17, 2), mode)
    b = occlusion_mask(np.array([5, 9, 3]), 0.5, (30, 17, 2), mode)
    assert torch.equal(a[0], b[2]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], a[1])
    # a longer T (more padding) keeps the same mask over the first frames
    c = occlusion_mask(np.array([3]), 0.5, (90, 17, 2), mode)
    assert torch.equal(c[0, :, :30], a[0])


def test_instance_seeds_fixed_and_fresh():
    keys = sample_keys([f"S{i:03d}" for i in range(10)])

    def seeds(seed, epoch=None, keys=keys):
        return instance_seeds(seed, keys, "train", "train", epoch)

    assert torch.equal(seeds(1), seeds(1))
    assert not torch.equal(seeds(1), seeds(2))
    assert torch.equal(seeds(1, 3), seeds(1, 3))
    assert not torch.equal(seeds(1, 3), seeds(1, 4))
    assert len(set(seeds(1, keys=np.arange(1000)).tolist())) == 1000
    # a sample keeps its seed wherever it sits in a batch or a split
    assert torch.equal(seeds(1, keys=keys[::-1]), seeds(1).flip(0))
    with pytest.raises(ValueError, match="purpose"):
        instance_seeds(1, keys, "test", "test")


def _class_masks(ids, labels, seed, purpose, split, p=0.6, shape=(32, 17, 2)):
    """{class: set of mask bit-strings} for the instances of a split."""
    masks = occlusion_mask(instance_seeds(seed, sample_keys(ids), purpose, split), p, shape)
    out = {}
    for mask, label in zip(masks[:, 0, 0].reshape(len(ids), -1).numpy(), labels):
        out.setdefault(int(label), set()).add(mask.tobytes())
    return out


@pytest.mark.parametrize("train_seed,test_seed", [(0, 0), (1, 1), (0, 1), (1, 0), (7, 7), (3, 1000)])
def test_test_masks_never_repeat_training_masks(train_seed, test_seed):
    """The old defect: seeds by position in two sorted splits gave test instance i the mask of
    training instance i (same class) whenever the seeds were equal. Masks now hash purpose, split
    and sample id, so a test mask equals a same-class training mask only by chance (the chance
    for 34 independent draws at p = 0.6 is 0.52 ** 34 ~ 2e-10 per pair)."""
    classes = 12
    train_ids = [f"S{s:03d}A{a:03d}R{r}" for s in range(11) for a in range(classes) for r in range(4)]
    test_ids = [f"S{s:03d}A{a:03d}R{r}" for s in range(11, 16) for a in range(classes) for r in range(4)]
    labels = [int(i[5:8]) for i in train_ids], [int(i[5:8]) for i in test_ids]
    train = _class_masks(train_ids, labels[0], train_seed, "train", "train")
    test = _class_masks(test_ids, labels[1], test_seed, "eval", "test")
    shared = sum(len(test[c] & train.get(c, set())) for c in test)
    assert shared == 0
    # the same sample evaluated on its own split still differs from its training mask
    own = instance_seeds(train_seed, sample_keys(train_ids), "eval", "train")
    trained = instance_seeds(train_seed, sample_keys(train_ids), "train", "train")
    assert not (own == trained).any()
    # and the old positional scheme would have failed this test at equal seeds
    if train_seed == test_seed:
        by_index = occlusion_mask(instance_seeds(train_seed, np.arange(len(test_ids)), "eval", "x"), 0.6, (32, 17, 2))
        old_train = occlusion_mask(instance_seeds(train_seed, np.arange(len(train_ids)), "eval", "x"), 0.6, (32, 17, 2))
        assert torch.equal(by_index, old_train[:len(test_ids)])


@pytest.mark.parametrize("mode", MODES)
def test_occlude_array_and_tensor(mode):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.0, size=(8, 3, 40, 17, 2)).astype(np.float32)
    x[:, :, 30:] = 0  # padding
    y = occlude(x, 0.3, seed=11, mode=mode)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    yt = occlude(torch.from_numpy(x), 0.3, seed=11, mode=mode)
    assert isinstance(yt, torch.Tensor)
    np.testing.assert_array_equal(yt.numpy(), y)
    # padding untouched, kept joints unchanged, a joint never partly zeroed
    assert not y[:, :, 30:].any()
    zero = (y == 0)
    assert np.all(zero.all(axis=1) == zero.any(axis=1))
    kept = ~zero.all(axis=1, keepdims=True).repeat(3, axis=1)
    np.testing.assert_array_equal(y[kept], x[kept])
    rate = zero[:, 0, :30].mean()
    assert 0.15 < rate < 0.45
    # same seed same result, other seed other result
    np.testing.assert_array_equal(occlude(x, 0.3, seed=11, mode=mode), y)
    assert not np.array_equal(occlude(x, 0.3, seed=12, mode=mode), y)


def test_occlude_single_instance_uses_its_seed():
    x = np.ones((3, 20, 17, 2), np.float32)
    y = occlude(x, 0.5, seed=42)
    m = occlusion_mask(np.array([42]), 0.5, (20, 17, 2))[0].numpy()
    np.testing.assert_array_equal(y, x * m)


def test_lengths_mark_padding():
    m = occlusion_mask(np.arange(3), 0.0, (10, 2, 2), lengths=np.array([10, 5, 0]))
    assert m[0].all() and m[1, :, :5].all() and not m[1, :, 5:].any() and not m[2].any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_same_mask_on_gpu():
    seeds = instance_seeds(5, np.arange(64), "train", "train")
    for mode in MODES:
        cpu = occlusion_mask(seeds, 0.3, (300, 17, 2), mode)
        gpu = occlusion_mask(seeds.cuda(), 0.3, (300, 17, 2), mode)
        assert gpu.device.type == "cuda"
        assert torch.equal(cpu, gpu.cpu())


def test_occlude_batch_xy_keeps_the_confidence_channel():
    from skelpipe.skeleton.noise import occlude_batch
    x = torch.rand(6, 3, 20, 17, 1) + 0.5
    seeds = instance_seeds(3, sample_keys([f"s{i}" for i in range(6)]), "eval", "test")
    every = occlude_batch(x, seeds, 0.5, "track", "all")
    xy = occlude_batch(x, seeds, 0.5, "track", "xy")
    lost = (every == 0).all(dim=1)                     # joints occluded: every channel zero
    assert 0.3 < lost.float().mean() < 0.7
    assert torch.equal(xy[:, :2], every[:, :2])        # the same joints lose x and y
    assert torch.equal(xy[:, 2], x[:, 2])              # and keep their confidence
    with pytest.raises(ValueError, match="channels"):
        occlude_batch(x, seeds, 0.5, "track", "conf")


def test_occlude_is_occlude_batch_over_the_leading_dimensions():
    from skelpipe.skeleton.noise import occlude_batch
    x = torch.rand(2, 3, 3, 12, 17, 1) + 0.5
    seeds = instance_seeds(1, sample_keys([f"s{i}" for i in range(6)]), "eval", "test")
    y = occlude(x, 0.4, seeds, "block", 2, "xy")
    assert torch.equal(y.reshape(6, 3, 12, 17, 1), occlude_batch(x.reshape(6, 3, 12, 17, 1), seeds, 0.4, "block", "xy", 2))
    assert torch.equal(y[:, :, 2], x[:, :, 2]) and not torch.equal(y, x)
