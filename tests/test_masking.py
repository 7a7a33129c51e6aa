"""MLM masking: rate and 80/10/10 statistics, specials never touched, replacements from the whole
vocabulary, determinism from (seed, row index)."""

from __future__ import annotations

import numpy as np
import pytest

from data_fixtures.helpers import small_tokenizer_dir
from flexbert.config import IGNORE_INDEX
from flexbert.data.masking import MLMMasker
from flexbert.data.tokenizer import SpecialTokens


@pytest.fixture(scope="module")
def special(tmp_path_factory):
    return SpecialTokens.from_dir(small_tokenizer_dir(tmp_path_factory))


def packed_like_rows(special, n_rows=16, T=65536, seed=0):
    """Rows shaped like real packed rows: [CLS] body [SEP] documents and a pad tail."""
    rng = np.random.default_rng(seed)
    pool = special.replacement_ids()
    rows = []
    for _ in range(n_rows):
        parts, used = [], 0
        while used < T - 600:
            n = int(rng.integers(10, 500))
            parts += [[special.cls_id], rng.choice(pool, n), [special.sep_id]]
            used += n + 2
        ids = np.concatenate(parts).astype(np.int64)
        rows.append(np.concatenate([ids, np.full(T - len(ids), special.pad_id)]))
    return rows


@pytest.mark.parametrize("p", [0.30, 0.15])
def test_rate_and_80_10_10(special, p):
    masker = MLMMasker(special, p, seed=3)
    never = special.special_mask()
    sel = eligible = n_mask = n_rand = n_same = 0
    for i, ids in enumerate(packed_like_rows(special)):
        out, labels, n = masker(ids, i)
        picked = labels != IGNORE_INDEX
        assert n == picked.sum()
        assert np.array_equal(labels[picked], ids[picked])
        assert np.array_equal(out[~picked], ids[~picked])  # nothing else changes
        assert not never[ids[picked]].any(), "a special token or padding was selected"
        assert not never[out[picked & (out != special.mask_id)]].any(), "a special token was used as replacement"
        eligible += (~never[ids]).sum()
        sel += n
        n_mask += (out[picked] == special.mask_id).sum()
        n_same += (out[picked] == ids[picked]).sum()
        n_rand += ((out[picked] != ids[picked]) & (out[picked] != special.mask_id)).sum()
    rate = sel / eligible
    assert abs(rate - p) <= 0.01 * p, rate  # within 1% (relative) of the rate
    # a random draw equal to the original counts as "unchanged": 0.1 / |pool| of the selections
    assert abs(n_mask / sel - 0.8) <= 0.01
    assert abs(n_rand / sel - 0.1) <= 0.01
    assert abs(n_same / sel - 0.1) <= 0.01


def test_replacements_cover_the_whole_non_special_vocabulary(special):
    """A row of only low ids must still get replacements from the top of the vocabulary
    (the reference drew them only up to the batch's largest id)."""
    masker = MLMMasker(special, 0.5, seed=0)
    pool = special.replacement_ids()
    low = int(pool[0])
    ids = np.full(200_000, low, dtype=np.int64)
    out, labels, _ = masker(ids, 0)
    repl = out[(labels != IGNORE_INDEX) & (out != special.mask_id) & (out != low)]
    assert set(np.unique(repl)) <= set(pool.tolist())
    assert repl.max() == pool.max() and repl.min() <= pool[1]
    counts = np.bincount(repl, minlength=special.vocab_size)[pool[1:]]
    # ~ 10,000 draws over ~500 ids: roughly uniform (no id 3x more frequent than the mean)
    assert counts.max() < 3 * counts.mean() and (counts > 0).mean() > 0.99


def test_deterministic_per_seed_and_row(special):
    ids = packed_like_rows(special, n_rows=1, T=4096)[0]
    a = MLMMasker(special, 0.3, seed=11)
    b = MLMMasker(special, 0.3, seed=11)
    o1, l1, _ = a(ids, 42)
    o2, l2, _ = b(ids, 42)
    assert np.array_equal(o1, o2) and np.array_equal(l1, l2)
    o3, l3, _ = a(ids, 43)
    assert not np.array_equal(l1, l3)
    o4, l4, _ = MLMMasker(special, 0.3, seed=12)(ids, 42)
    assert not np.array_equal(l1, l4)


def test_rejects_bad_arguments(special):
    with pytest.raises(ValueError):
        MLMMasker(special, 0.0)
    with pytest.raises(ValueError):
        MLMMasker(special, 0.3, mask_frac=0.95, random_frac=0.1)
    with pytest.raises(ValueError, match="outside the tokenizer"):
        MLMMasker(special, 0.3)(np.array([special.vocab_size + 5]), 0)
