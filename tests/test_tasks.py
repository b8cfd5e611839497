from collections import Counter

import numpy as np
import pytest
from pydoc_data.topics import topics

from rnngrad.losses import mse, softmax_xent
from rnngrad.tasks import TEST_SEED, make_task

SEQ_LEN = {"adding": 12, "temporal_order": 20, "copy": 7, "char_lm": 16}
NAMES = list(SEQ_LEN)


def rng(seed=0):
    return np.random.default_rng(seed)


def perfect_outputs(task, y):
    """Outputs that are right on every step: the targets, or one-hot logits of the class ids."""
    if task.loss == "mse":
        return y.copy()
    return 10.0 * np.eye(task.output_size)[y]


@pytest.fixture(params=NAMES)
def task(request):
    return make_task(request.param, seq_len=SEQ_LEN[request.param])


# ---- every task ----

def test_shapes_dtypes_and_masks(task):
    B = 5
    x, y, mask = task.sample(B, rng())
    T = task.seq_len + (20 if task.name == "copy" else 0)
    assert task.length == T
    assert x.shape == (T, B, task.input_size) and x.dtype == np.float64
    assert mask.shape == (T, B) and mask.dtype == np.float64
    if task.loss == "mse":
        assert y.shape == (T, B, task.output_size) and y.dtype == np.float64
        assert np.all(y[mask == 0] == 0.0)
    else:
        assert y.shape == (T, B) and y.dtype == np.int64
        assert np.all(y[mask == 0] == 0) and y.min() >= 0 and y.max() < task.output_size
    expected_mask = np.ones((T, B))
    if task.name in ("adding", "temporal_order"):
        expected_mask[:-1] = 0.0
    np.testing.assert_array_equal(mask, expected_mask)


def test_sample_is_reproducible_from_the_seed(task):
    a, b, c = task.sample(6, rng(3)), task.sample(6, rng(3)), task.sample(6, rng(4))
    for u, v, w in zip(a, b, c):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])


def test_test_set_is_fixed_and_independent_of_training_rng(task):
    first = task.test_set()
    task.sample(7, rng(123))
    again = task.test_set()
    fresh = make_task(task.name, seq_len=task.seq_len).test_set()
    assert first[0].shape[1] == task.test_size
    for u, v, w in zip(first, again, fresh):
        np.testing.assert_array_equal(u, v)
        np.testing.assert_array_equal(u, w)
    with pytest.raises(ValueError):
        first[0][0, 0, 0] = 1.0
    # a training rng seeded with the test seed, or another test seed, gives other sequences
    assert not np.array_equal(task.sample(task.test_size, rng(TEST_SEED))[0], first[0])
    other = make_task(task.name, seq_len=task.seq_len, test_seed=TEST_SEED + 1).test_set()
    assert not np.array_equal(other[0], first[0])


def test_perfect_predictions_have_accuracy_one(task):
    _, y, mask = task.sample(9, rng())
    acc = task.accuracy(perfect_outputs(task, y), y, mask)
    assert acc == 1.0
    if task.name != "char_lm":
        assert task.is_solved(0.0, acc) and task.is_solved(0.0, 0.99) and not task.is_solved(0.0, 0.989)


def test_bad_names_and_options_raise():
    with pytest.raises(ValueError, match="adding, temporal_order, copy, char_lm"):
        make_task("multiplication", seq_len=10)
    with pytest.raises(ValueError, match="valid options: min_seq_len, test_seed, test_size"):
        make_task("adding", seq_len=10, train_fraction=0.5)
    with pytest.raises(ValueError, match="train_fraction, solve_fraction, test_seed, test_size"):
        make_task("char_lm", seq_len=10, n_symbols=4)
    for seq_len in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="seq_len"):
            make_task("copy", seq_len=seq_len)
    with pytest.raises(ValueError, match="batch_size"):
        make_task("adding", seq_len=10).sample(0, rng())
    with pytest.raises(ValueError, match="train_fraction"):
        make_task("char_lm", seq_len=10, train_fraction=1.0)
    task = make_task("temporal_order", seq_len=10)
    _, y, mask = task.sample(2, rng())
    with pytest.raises(ValueError, match="4 outputs"):
        task.accuracy(np.zeros((10, 2, 3)), y, mask)


# ---- adding ----

def test_adding_markers_and_target():
    T, B = 12, 2000
    task = make_task("adding", seq_len=T)
    x, y, _ = task.sample(B, rng())
    values, markers = x[..., 0], x[..., 1]
    assert np.all((values >= 0) & (values < 1))
    assert np.all(np.isin(markers, (0.0, 1.0)))
    np.testing.assert_array_equal(markers[: T // 2].sum(axis=0), 1.0)
    np.testing.assert_array_equal(markers[T // 2:].sum(axis=0), 1.0)
    # every position of each half is used
    assert np.all(markers.sum(axis=1) > 0)
    np.testing.assert_allclose(y[-1, :, 0], np.sum(values * markers, axis=0), rtol=1e-15)
    first = markers.argmax(axis=0)
    assert task.dependency == T - 1 == np.max(T - 1 - first)
    # each marker's distance from the loss at step T - 1 spans exactly the range `relevant` states
    second = T - 1 - markers[::-1].argmax(axis=0)
    distances = [T - 1 - second, T - 1 - first]
    assert task.relevant == tuple((int(d.min()), int(d.max())) for d in distances) == ((0, 5), (6, 11))


def test_adding_constant_predictor_matches_baseline():
    task = make_task("adding", seq_len=4)
    _, y, mask = task.sample(20_000, rng())
    best_constant = y[-1].mean()
    loss, _ = mse(np.full(y.shape, best_constant), y, mask)
    assert task.baseline == 1 / 6
    assert loss == pytest.approx(task.baseline, rel=0.02)


def test_adding_accuracy_counts_errors_below_004_at_the_last_step():
    task = make_task("adding", seq_len=6)
    _, y, mask = task.sample(8, rng())
    out = np.full(y.shape, 5.0)  # wrong on every step without loss
    errors = np.array([0.03, -0.039, 0.05, -0.1, 0.0, 0.0399, 0.041, 1.0])
    out[-1, :, 0] = y[-1, :, 0] + errors
    assert task.accuracy(out, y, mask) == 4 / 8


# ---- temporal order ----

def relevant_positions(x):
    """(2, B) steps of the two X/Y symbols of each sequence, and (2, B) whether each is Y."""
    symbols = x.argmax(axis=2)
    t, b = np.nonzero(symbols >= 4)
    assert np.array_equal(np.bincount(b), np.full(x.shape[1], 2))
    t = t[np.argsort(b, kind="stable")].reshape(-1, 2).T
    return t, symbols[t, np.arange(x.shape[1])] == 5


def test_temporal_order_positions_and_classes():
    T, B = 20, 2000
    task = make_task("temporal_order", seq_len=T)
    x, y, _ = task.sample(B, rng())
    np.testing.assert_array_equal(x.sum(axis=2), 1.0)
    (t1, t2), (y1, y2) = relevant_positions(x)
    assert set(t1) == {2, 3} and set(t2) == {10, 11}  # [0.1T, 0.2T) and [0.5T, 0.6T)
    np.testing.assert_array_equal(y[-1], 2 * y1 + y2)
    assert set(y[-1]) == {0, 1, 2, 3}
    assert task.dependency == T - 1 - 2 == np.max(T - 1 - t1)
    # t2's and t1's distances from the loss at step T - 1, nearest first: what the truncation bands read
    assert task.relevant == tuple((int(np.min(T - 1 - t)), int(np.max(T - 1 - t))) for t in (t2, t1)) == ((8, 9), (16, 17))


@pytest.mark.parametrize("T", range(2, 13))
def test_temporal_order_windows_are_valid_for_short_sequences(T):
    task = make_task("temporal_order", seq_len=T)
    (lo1, hi1), (lo2, hi2) = task.windows
    assert lo1 < hi1 <= lo2 < hi2 <= T
    (t1, t2), _ = relevant_positions(task.sample(50, rng())[0])
    assert np.all((lo1 <= t1) & (t1 < hi1) & (lo2 <= t2) & (t2 < hi2))


def test_temporal_order_class_prior_matches_baseline():
    task = make_task("temporal_order", seq_len=10)
    _, y, mask = task.sample(20_000, rng())
    prior = np.bincount(y[-1], minlength=4) / y.shape[1]
    loss, _ = softmax_xent(np.broadcast_to(np.log(prior), y.shape + (4,)), y, mask)
    assert task.baseline == np.log(4)
    assert loss == pytest.approx(task.baseline, rel=0.02)


def test_temporal_order_accuracy_on_crafted_errors():
    task = make_task("temporal_order", seq_len=10)
    _, y, mask = task.sample(10, rng())
    out = perfect_outputs(task, y)
    out[:-1] = 10.0 * np.eye(4)[(y[:-1] + 1) % 4]  # wrong where no loss is taken
    wrong = [1, 4, 8]
    out[-1, wrong] = 10.0 * np.eye(4)[(y[-1, wrong] + 2) % 4]
    assert task.accuracy(out, y, mask) == 7 / 10


# ---- copy ----

def test_copy_layout():
    T, B = 7, 500
    task = make_task("copy", seq_len=T)
    x, y, _ = task.sample(B, rng())
    np.testing.assert_array_equal(x.sum(axis=2), 1.0)
    ids = x.argmax(axis=2)
    assert set(ids[:10].ravel()) == set(range(1, 9))
    np.testing.assert_array_equal(ids[10:T + 9], 0)  # T - 1 blanks
    np.testing.assert_array_equal(ids[T + 9], 9)  # delimiter
    np.testing.assert_array_equal(ids[T + 10:], 0)
    np.testing.assert_array_equal(y[:T + 10], 0)
    np.testing.assert_array_equal(y[T + 10:], ids[:10])
    # each symbol is recalled `dependency` steps after it is shown
    assert task.dependency == T + 10
    assert task.relevant == ((T + 10, T + 10),)
    np.testing.assert_array_equal(y[np.arange(10) + task.dependency], ids[:10])


def test_copy_memoryless_predictor_matches_baseline():
    T = 7
    task = make_task("copy", seq_len=T)
    _, y, _ = task.sample(5000, rng())
    # predictor knowing the step only: blank for T + 10 steps, then uniform over the 8 symbols
    p_oracle = np.zeros((T + 20, 9))
    p_oracle[:T + 10, 0] = 1.0
    p_oracle[T + 10:, 1:] = 1 / 8
    # the same from the data: each step's empirical class frequencies
    p_empirical = np.stack([np.bincount(y_t, minlength=9) for y_t in y]) / y.shape[1]
    for p, rel in ((p_oracle, 1e-12), (p_empirical, 0.02)):
        xent = -np.mean(np.log(np.take_along_axis(p, y, axis=1)))
        assert xent == pytest.approx(task.baseline, rel=rel)
    assert task.baseline == 10 * np.log(8) / (T + 20)


def test_copy_accuracy_counts_only_the_recalled_symbols():
    T, B = 5, 4
    task = make_task("copy", seq_len=T)
    _, y, mask = task.sample(B, rng())
    out = perfect_outputs(task, y)
    out[:T + 10] = 10.0 * np.eye(9)[5]  # blanks are not part of the score
    for t, b in [(T + 10, 0), (T + 13, 2), (T + 19, 3)]:
        out[t, b] = 10.0 * np.eye(9)[y[t, b] % 8 + 1]  # another symbol
    assert task.accuracy(out, y, mask) == 1 - 3 / 40


# ---- char_lm ----

@pytest.fixture(scope="module")
def text():
    """The corpus rebuilt independently of the task, and its 90/10 split."""
    full = "".join(topics[k] for k in sorted(topics))
    split = int(0.9 * len(full))
    return full, full[:split], full[split:]


def windows(task, x, y):
    """Each sequence of a char_lm batch as the string of its seq_len + 1 characters."""
    return [task.decode(x[:, b].argmax(axis=1)) + task.decode(y[-1, b]) for b in range(x.shape[1])]


def test_char_lm_vocab_split_and_baseline(text):
    full, train, test = text
    task = make_task("char_lm", seq_len=16)
    assert task.vocab == "".join(sorted(set(full)))
    assert set(train) | set(test) <= set(task.vocab)
    assert task.decode(task.train_ids) == train and task.decode(task.test_ids) == test
    assert task.input_size == task.output_size == len(task.vocab)
    counts = np.array(list(Counter(train).values()))
    entropy = -np.sum(counts / len(train) * np.log(counts / len(train)))
    assert task.baseline == pytest.approx(entropy, rel=1e-12)
    assert task.baseline_bits == pytest.approx(entropy / np.log(2), rel=1e-12)
    assert task.dependency == 1
    half = make_task("char_lm", seq_len=16, train_fraction=0.5)
    assert len(half.train_ids) == int(0.5 * len(full))


def test_char_lm_windows_come_from_their_split(text):
    _, train, test = text
    task = make_task("char_lm", seq_len=16)
    x, y, _ = task.sample(20, rng())
    np.testing.assert_array_equal(x[1:].argmax(axis=2), y[:-1])
    assert all(w in train for w in windows(task, x, y))
    x, y, _ = task.test_set(size=20)
    assert all(w in test for w in windows(task, x, y))
    # a test part of exactly seq_len + 1 chars admits one window, the whole part
    fraction = 1 - 40 / len(text[0])
    n_test = len(make_task("char_lm", seq_len=2, train_fraction=fraction).test_ids)
    tight = make_task("char_lm", seq_len=n_test - 1, train_fraction=fraction)
    x, y, _ = tight.test_set(size=30)
    assert set(windows(tight, x, y)) == {tight.decode(tight.test_ids)}
    with pytest.raises(ValueError, match="too long"):
        make_task("char_lm", seq_len=n_test, train_fraction=fraction)


def test_char_lm_unigram_predictor_matches_baseline():
    task = make_task("char_lm", seq_len=32)
    _, y, mask = task.sample(400, rng())
    p = np.bincount(task.train_ids, minlength=len(task.vocab)) / len(task.train_ids)
    loss, _ = softmax_xent(np.broadcast_to(np.log(p + 1e-300), y.shape + p.shape), y, mask)
    assert loss == pytest.approx(task.baseline, rel=0.02)


def test_char_lm_accuracy_and_solve_criterion():
    task = make_task("char_lm", seq_len=4)
    _, y, mask = task.sample(5, rng())
    out = perfect_outputs(task, y)
    out[1, 2] = 10.0 * np.eye(task.output_size)[(y[1, 2] + 1) % task.output_size]
    out[3, 0] = out[1, 2]
    assert task.accuracy(out, y, mask) == 1 - 2 / 20
    nats = np.log(2) * task.baseline_bits
    assert task.is_solved(0.79 * nats, 0.0) and not task.is_solved(0.81 * nats, 1.0)
    loose = make_task("char_lm", seq_len=4, solve_fraction=0.9)
    assert loose.is_solved(0.85 * nats, 0.0)


def test_char_lm_stream_chunks_are_consecutive(text):
    _, train, _ = text
    task = make_task("char_lm", seq_len=16)
    stream = task.stream(4, rng())
    x1, y1, m1 = stream.next_chunk(5)
    x2, y2, _ = stream.next_chunk(5)
    assert x1.shape == (5, 4, task.input_size) and y1.shape == m1.shape == (5, 4)
    np.testing.assert_array_equal(x2[0].argmax(axis=1), y1[-1])
    joined = [w1[:-1] + w2 for w1, w2 in zip(windows(task, x1, y1), windows(task, x2, y2))]
    assert all(len(w) == 11 and w in train + train[:10] for w in joined)
    # past the end of the train text a stream wraps to its start
    stream.cursors = np.array([len(train) - 3])
    x, y, _ = stream.next_chunk(5)
    assert task.decode(x[:, 0].argmax(axis=1)) == train[-3:] + train[:2]
    assert task.decode(y[:, 0]) == train[-2:] + train[:3]
    x, _, _ = stream.next_chunk(2)
    assert task.decode(x[:, 0].argmax(axis=1)) == train[2:4]
    with pytest.raises(ValueError, match="chunk length"):
        stream.next_chunk(0)
