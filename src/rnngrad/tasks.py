"""Sequence tasks that probe how far back an RNN can carry credit.

Every task draws time-major batches `(x, y, mask)`: x (T, B, D) float64 inputs; y (T, B, O) float64
targets for the 'mse' tasks or (T, B) int64 class ids for the 'xent' tasks (0 where masked out);
mask (T, B) float64, 1 on the steps that carry loss. `baseline` is the loss of the best predictor
that remembers nothing of the inputs (analytic); `dependency` is the largest number of steps between
an input and a loss term that needs it.

- adding (Le, Jaitly & Hinton 2015; the variant of Arjovsky, Shah & Bengio 2016): each step is
  (value ~ U[0, 1], marker in {0, 1}); one marker in [0, T//2), one in [T//2, T); the target, at the
  last step, is the sum of the two marked values; MSE. Baseline 1/6 = Var(X1 + X2), predicting 1.
  Dependency T - 1 (a marker at step 0). Solved: accuracy >= 0.99, where a sequence is correct when
  |prediction - target| < 0.04 (Hochreiter & Schmidhuber 1997).
- temporal_order (Hochreiter & Schmidhuber 1997, task 6a; Pascanu, Mikolov & Bengio 2013): one-hot
  symbols over {a, b, c, d, X, Y}; distractors from {a, b, c, d}; X or Y at t1 in [0.1T, 0.2T) and at
  t2 in [0.5T, 0.6T); class at the last step = index of the ordered pair in (XX, XY, YX, YY); xent.
  Baseline ln 4. Dependency T - 1 - int(0.1T) (t1 at its earliest). Solved: accuracy >= 0.99 on the
  test set, Pascanu et al.'s "under 1% errors".
- copy (Arjovsky, Shah & Bengio 2016): 10 symbols from 8 categories (ids 1..8), T - 1 blanks (0), a
  delimiter (9), 10 blanks: T + 20 steps, one-hot D = 10. Target: T + 10 blanks, then the 10 symbols;
  xent on every step, O = 9. Baseline 10 ln 8 / (T + 20): blanks predicted exactly, the symbols at
  chance. Dependency T + 10 (each symbol to its recall). Solved: accuracy >= 0.99 over the recalled
  symbols.
- char_lm (next-character prediction on the CPython documentation topics, `pydoc_data.topics`, about
  465,000 characters): one-hot characters, target y_t = the character after x_t; xent on every step.
  The first 90% of the text trains, the last 10% tests. Baseline: the unigram entropy of the train
  text (nats/char; `baseline_bits` in bits/char). Dependency 1 by convention: the predicted character
  is one step past the last input, and no longer range is required. Solved: test bits/char below
  `solve_fraction` (default 0.8) times the unigram baseline in bits.

Variable lengths (adding and temporal_order, option `min_seq_len`): each training batch has its own
length L, drawn uniformly from [min_seq_len, seq_len] (both ends included), and the task's positions are
drawn relative to L as its definition says (markers in [0, L//2) and [L//2, L); t1 in [0.1L, 0.2L), t2 in
[0.5L, 0.6L)). The test set stays at T = seq_len, and `dependency` and `baseline` are those of T.
Pascanu, Mikolov & Bengio (2013) trained temporal order this way, on lengths in [50, 200]; their code
(pascanur/trainingRNNs, RNN.py) draws `min_length + randint(max_length - min_length)`, so its longest
length is max_length - 1, and it validates on lengths drawn from the same range: here the upper end is
included and the test is at T, the length the question is about (a deviation from their code, not from
the paper, which states neither).
"""
import abc
import functools

import numpy as np
from pydoc_data.topics import topics

from rnngrad import registry
from rnngrad.losses import check_batch

TEST_SEED = 1997
# Mixed into the test seed so that a run seeded with the same number still trains on other sequences.
_TEST_STREAM = 0x7E57
SOLVED_ACCURACY = 0.99
ADDING_TOLERANCE = 0.04
N_RECALL = 10
N_CATEGORIES = 8


def _check_count(value, label, minimum):
    """Raise ValueError unless value is an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{label} must be an integer >= {minimum}, got {value!r}")


def _one_hot(ids, n):
    """(T, B) integer ids -> (T, B, n) float64 one-hot rows."""
    return np.eye(n)[ids]


class Task(abc.ABC):
    """A sequence task: batches from `sample`, a fixed `test_set`, `accuracy` and `is_solved`.

    Subclasses set `name`, `loss`, `input_size`, `output_size`, `baseline`, `dependency` and draw
    batches in `_draw`.
    """

    @property
    def relevant(self):
        """((nearest, farthest), ...): for each input the loss needs, the range of its distance in steps from the
        loss term that needs it, nearest first (a truncation window k reaches an input at distance d when
        k >= d + 1). By default the one distance `dependency`; the tasks whose relevant inputs sit at random
        positions give each one's range."""
        return ((self.dependency, self.dependency),)

    name = None
    loss = None
    input_size = None
    output_size = None

    def __init__(self, seq_len, *, test_seed=TEST_SEED, test_size=1000):
        _check_count(seq_len, "seq_len", 2)
        _check_count(test_size, "test_size", 1)
        self.seq_len = int(seq_len)
        self.test_seed = test_seed
        self.test_size = int(test_size)
        self._test_sets = {}

    @property
    def length(self):
        """T, the number of time steps fed to the model."""
        return self.seq_len

    def sample(self, batch_size, rng):
        """A fresh training batch (x, y, mask) of batch_size sequences from the numpy Generator rng."""
        _check_count(batch_size, "batch_size", 1)
        return self._draw(batch_size, rng)

    @abc.abstractmethod
    def _draw(self, batch_size, rng):
        """The task's batch (x, y, mask); subclasses document its shapes."""

    def _draw_test(self, batch_size, rng):
        """A test batch; synthetic tasks draw it from the training distribution."""
        return self._draw(batch_size, rng)

    def test_set(self, size=None):
        """The fixed test batch (x, y, mask) of `size` sequences (default `test_size`).

        Drawn once from `test_seed`, independently of any training rng, and cached read-only, so
        every call returns the same arrays.
        """
        size = self.test_size if size is None else size
        _check_count(size, "test set size", 1)
        if size not in self._test_sets:
            batch = self._draw_test(size, np.random.default_rng([self.test_seed, _TEST_STREAM]))
            for array in batch:
                array.flags.writeable = False
            self._test_sets[size] = batch
        return self._test_sets[size]

    def _correct(self, out, y):
        """(T, B) bool: whether each step's output counts as correct; here the argmax class."""
        return out.argmax(axis=2) == y

    def accuracy(self, out, y, mask):
        """Fraction of the masked steps predicted correctly.

        Inputs: out (T, B, O) raw model outputs, y and mask as returned by `sample`.
        """
        check_batch(out, y, mask, self.loss)
        if out.shape[2] != self.output_size:
            raise ValueError(f"out must have {self.output_size} outputs, got {out.shape[2]}")
        return float(np.sum(self._correct(out, y) * mask) / mask.sum())

    def is_solved(self, loss, accuracy):
        """Success criterion on the test set: accuracy >= 0.99 (Pascanu et al. 2013: under 1% errors)."""
        return accuracy >= SOLVED_ACCURACY


class VariableLengthTask(Task):
    """A synthetic task whose training batches may vary in length (see the module docstring).

    Subclasses draw a batch of a given length L in `_draw_length(batch_size, rng, L)`.
    """

    def __init__(self, seq_len, *, min_seq_len=None, test_seed=TEST_SEED, test_size=1000):
        super().__init__(seq_len, test_seed=test_seed, test_size=test_size)
        if min_seq_len is not None:
            _check_count(min_seq_len, "min_seq_len", 2)
            if min_seq_len > self.seq_len:
                raise ValueError(f"min_seq_len must be <= seq_len = {self.seq_len}, got {min_seq_len}")
            min_seq_len = int(min_seq_len)
        self.min_seq_len = min_seq_len

    @property
    def variable(self):
        """Whether the training lengths vary (min_seq_len set and below seq_len)."""
        return self.min_seq_len is not None and self.min_seq_len < self.seq_len

    def train_length(self, rng):
        """The length of the next training batch: uniform in [min_seq_len, seq_len], or seq_len (drawing
        nothing from rng, so that a fixed-length task's batches are those it always drew)."""
        return int(rng.integers(self.min_seq_len, self.seq_len + 1)) if self.variable else self.seq_len

    def sample(self, batch_size, rng):
        """A fresh training batch (x, y, mask) of batch_size sequences of length train_length(rng)."""
        _check_count(batch_size, "batch_size", 1)
        return self._draw_length(batch_size, rng, self.train_length(rng))

    def _draw(self, batch_size, rng):
        """A batch at the full length T (the test set)."""
        return self._draw_length(batch_size, rng, self.length)

    @abc.abstractmethod
    def _draw_length(self, batch_size, rng, length):
        """The task's batch at `length` steps."""


class AddingTask(VariableLengthTask):
    """Adding problem, Arjovsky et al. 2016 variant: x_t = (value, marker); target at the last step.

    A sequence is correct when |prediction - target| < 0.04 (Hochreiter & Schmidhuber 1997).
    """

    name = "adding"
    loss = "mse"
    input_size = 2
    output_size = 1
    baseline = 1.0 / 6.0  # Var(X1 + X2) = 2/12, predicting the mean 1

    @property
    def dependency(self):
        return self.length - 1

    @property
    def relevant(self):
        """The second marker in [T//2, T), the first in [0, T//2), as distances from the last step."""
        T = self.length
        return ((0, T - 1 - T // 2), (T - T // 2, T - 1))

    def _draw_length(self, batch_size, rng, length):
        """x (T, B, 2) = (value, marker); y (T, B, 1), the sum at the last step; mask (T, B); T = length."""
        T, B = length, batch_size
        cols = np.arange(B)
        values = rng.uniform(0.0, 1.0, size=(T, B))
        first = rng.integers(0, T // 2, size=B)
        second = rng.integers(T // 2, T, size=B)
        markers = np.zeros((T, B))
        markers[first, cols] = 1.0
        markers[second, cols] = 1.0
        x = np.stack([values, markers], axis=2)
        y = np.zeros((T, B, 1))
        y[-1, :, 0] = values[first, cols] + values[second, cols]
        mask = np.zeros((T, B))
        mask[-1] = 1.0
        return x, y, mask

    def _correct(self, out, y):
        return np.abs(out[..., 0] - y[..., 0]) < ADDING_TOLERANCE


def temporal_order_windows(T):
    """((lo1, hi1), (lo2, hi2)) at length T: t1 in [0.1T, 0.2T), t2 in [0.5T, 0.6T), non-empty for any T >= 2."""
    lo1 = int(0.1 * T)
    hi1 = max(int(0.2 * T), lo1 + 1)
    lo2 = int(0.5 * T)
    hi2 = max(int(0.6 * T), lo2 + 1)
    return (lo1, hi1), (lo2, hi2)


class TemporalOrderTask(VariableLengthTask):
    """Temporal order, Hochreiter & Schmidhuber 1997 task 6a: classify the order of X/Y at the end."""

    name = "temporal_order"
    loss = "xent"
    input_size = 6  # a, b, c, d, X, Y
    output_size = 4  # XX, XY, YX, YY
    baseline = float(np.log(4))
    X = 4

    @property
    def windows(self):
        """The windows of t1 and t2 at T (temporal_order_windows)."""
        return temporal_order_windows(self.length)

    @property
    def dependency(self):
        return self.length - 1 - self.windows[0][0]

    @property
    def relevant(self):
        """t2 in [lo2, hi2), then t1 in [lo1, hi1), as distances from the last step."""
        T, ((lo1, hi1), (lo2, hi2)) = self.length, self.windows
        return ((T - hi2, T - 1 - lo2), (T - hi1, T - 1 - lo1))

    def _draw_length(self, batch_size, rng, length):
        """x (T, B, 6) one-hot symbols; y (T, B) class id at the last step, 0 elsewhere; mask (T, B); T = length."""
        T, B = length, batch_size
        (lo1, hi1), (lo2, hi2) = temporal_order_windows(T)
        cols = np.arange(B)
        symbols = rng.integers(0, self.X, size=(T, B))
        is_y = rng.integers(0, 2, size=(2, B))
        symbols[rng.integers(lo1, hi1, size=B), cols] = self.X + is_y[0]
        symbols[rng.integers(lo2, hi2, size=B), cols] = self.X + is_y[1]
        y = np.zeros((T, B), dtype=np.int64)
        y[-1] = 2 * is_y[0] + is_y[1]
        mask = np.zeros((T, B))
        mask[-1] = 1.0
        return _one_hot(symbols, self.input_size), y, mask


class CopyTask(Task):
    """Copy memory, Arjovsky et al. 2016: recall 10 symbols after a delay of T steps.

    Accuracy and the success criterion count only the 10 recalled symbols.
    """

    name = "copy"
    loss = "xent"
    input_size = N_CATEGORIES + 2  # blank, 8 symbols, delimiter
    output_size = N_CATEGORIES + 1  # blank, 8 symbols
    DELIMITER = N_CATEGORIES + 1

    @property
    def length(self):
        return self.seq_len + 2 * N_RECALL

    @property
    def baseline(self):
        return N_RECALL * float(np.log(N_CATEGORIES)) / self.length

    @property
    def dependency(self):
        return self.seq_len + N_RECALL

    def _draw(self, batch_size, rng):
        """x (T+20, B, 10) one-hot; y (T+20, B) ids, the symbols on the last 10 steps; mask all ones."""
        L, B = self.length, batch_size
        symbols = rng.integers(1, N_CATEGORIES + 1, size=(N_RECALL, B))
        inputs = np.zeros((L, B), dtype=np.int64)
        inputs[:N_RECALL] = symbols
        inputs[self.seq_len + N_RECALL - 1] = self.DELIMITER
        y = np.zeros((L, B), dtype=np.int64)
        y[-N_RECALL:] = symbols
        return _one_hot(inputs, self.input_size), y, np.ones((L, B))

    def accuracy(self, out, y, mask):
        """Fraction of the recalled symbols (the last 10 steps) predicted correctly."""
        return super().accuracy(out[-N_RECALL:], y[-N_RECALL:], mask[-N_RECALL:])


@functools.cache
def _corpus():
    """(vocab, ids): the pydoc topics text, values joined in sorted key order, loaded once.

    vocab is the sorted string of its distinct characters; ids (N,) int64 indexes into it.
    """
    text = "".join(topics[key] for key in sorted(topics))
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    vocab_codes = np.unique(codes)
    ids = np.searchsorted(vocab_codes, codes).astype(np.int64)
    ids.flags.writeable = False
    return "".join(map(chr, vocab_codes)), ids


def _next_char_batch(chars, vocab_size):
    """(T+1, B) character ids -> (x, y, mask): x (T, B, V) one-hot of chars[:-1], y = chars[1:]."""
    return _one_hot(chars[:-1], vocab_size), chars[1:], np.ones(chars[1:].shape)


class CharLMTask(Task):
    """Character-level language model on the CPython documentation topics.

    loss values are in nats/char; `is_solved` compares them in bits with the unigram baseline.
    """

    name = "char_lm"
    loss = "xent"
    dependency = 1

    def __init__(self, seq_len, *, train_fraction=0.9, solve_fraction=0.8, test_seed=TEST_SEED,
                 test_size=256):
        super().__init__(seq_len, test_seed=test_seed, test_size=test_size)
        if not 0 < train_fraction < 1:
            raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
        if not solve_fraction > 0:
            raise ValueError(f"solve_fraction must be > 0, got {solve_fraction}")
        self.vocab, ids = _corpus()
        split = int(train_fraction * len(ids))
        self.train_ids, self.test_ids = ids[:split], ids[split:]
        if min(split, len(ids) - split) < seq_len + 1:
            raise ValueError(f"seq_len {seq_len} is too long for a split of {len(ids)} chars "
                             f"at train_fraction {train_fraction}")
        self.input_size = self.output_size = len(self.vocab)
        self.solve_fraction = solve_fraction
        p = np.bincount(self.train_ids, minlength=len(self.vocab)) / len(self.train_ids)
        p = p[p > 0]
        self.baseline = float(-np.sum(p * np.log(p)))
        self.baseline_bits = self.baseline / np.log(2)

    def decode(self, ids):
        """Character ids (any shape, flattened) -> the string they spell."""
        return "".join(self.vocab[i] for i in np.ravel(ids))

    def _windows(self, ids, batch_size, rng):
        """Random windows of seq_len + 1 consecutive characters of `ids`, as a batch."""
        starts = rng.integers(0, len(ids) - self.seq_len, size=batch_size)
        chars = ids[starts + np.arange(self.seq_len + 1)[:, None]]
        return _next_char_batch(chars, len(self.vocab))

    def _draw(self, batch_size, rng):
        """x (T, B, V) one-hot characters of the train text; y (T, B) the next characters; mask ones."""
        return self._windows(self.train_ids, batch_size, rng)

    def _draw_test(self, batch_size, rng):
        return self._windows(self.test_ids, batch_size, rng)

    def stream(self, batch_size, rng):
        """B parallel cursors through the train text for chunked truncated BPTT; see CharStream."""
        return CharStream(self, batch_size, rng)

    def is_solved(self, loss, accuracy):
        """Solved when the test loss, in bits/char, is below solve_fraction x the unigram baseline."""
        return bool(loss / np.log(2) < self.solve_fraction * self.baseline_bits)


class CharStream:
    """Consecutive chunks of the train text for BPTT(k; k) (Williams & Peng 1990), as in min-char-rnn.

    Each of the B streams starts at a random offset and advances k characters per `next_chunk(k)`,
    so the caller can carry the hidden state from one chunk to the next and cut the gradient at the
    boundary. The text is read as a ring: past its end a stream wraps to the start, the one seam per
    pass where the carried state meets unrelated text.
    """

    def __init__(self, task, batch_size, rng):
        _check_count(batch_size, "batch_size", 1)
        self.task = task
        self.cursors = rng.integers(0, len(task.train_ids), size=batch_size)

    def next_chunk(self, k):
        """The next k steps of every stream: x (k, B, V), y (k, B) next characters, mask (k, B) ones."""
        _check_count(k, "chunk length k", 1)
        ids = self.task.train_ids
        chars = ids[(self.cursors + np.arange(k + 1)[:, None]) % len(ids)]
        self.cursors = (self.cursors + k) % len(ids)
        return _next_char_batch(chars, len(self.task.vocab))


TASKS = {cls.name: cls for cls in (AddingTask, TemporalOrderTask, CopyTask, CharLMTask)}


def make_task(name, *, seq_len, **options):
    """The task called `name` ('adding', 'temporal_order', 'copy', 'char_lm') with sequence length seq_len.

    options: test_seed, test_size for every task; min_seq_len for adding and temporal_order;
    train_fraction, solve_fraction for char_lm.
    """
    return registry.lookup("task", TASKS, name, options, "seq_len")(seq_len, **options)


def option_names(name) -> tuple[str, ...]:
    """The keyword options of the task called `name` (test_seed, test_size, and its own)."""
    return registry.option_names(TASKS[name], "seq_len")
