"""The imprint attack of Fowl et al., "Robbing the Fed" (ICLR 2022), against the agent's code.

A cheating buyer publishes an MLP whose first layer is an imprint layer and reads training rows
out of the decrypted sum of two providers' updates. Everything between the crafted weights and
the decrypted sum is the real code: ``ProviderAgent._build_envelope`` (prepare, train_local,
compute_update, DP, encrypt_update), envelope validation, the server's ``Accumulator`` and the
buyer's ``decrypt_aggregate``, on real CKKS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.data import Dataset, prepare
from agents.experiment import FederatedSplit, load_digits_split
from agents.imprint import attack_round
from agents.privacy import DEFAULT_MAX_EPSILON, PrivacyDeclinedError, PrivacyPolicy

BINS = 1024


@pytest.fixture(scope="module")
def two_providers() -> FederatedSplit:
    """Digits: two providers of 300 raw rows each, and the buyer's held-out rows."""
    split = load_digits_split(2, seed=3)
    pool = split.providers[0]
    rows = np.concatenate([p.X for p in split.providers])
    labels = np.concatenate([p.y for p in split.providers])
    order = np.random.default_rng(0).permutation(len(rows))[:600]
    both = Dataset(
        rows[order], labels[order], pool.feature_names, pool.label_name, pool.feature_types
    )
    return FederatedSplit(
        [both.take(np.arange(300)), both.take(np.arange(300, 600))], split.test, split.schema
    )


def test_without_dp_the_buyer_reads_training_rows_out_of_the_sum(
    two_providers: FederatedSplit, tmp_path: Path
) -> None:
    """Robbing the Fed (Fowl et al., ICLR 2022): with DP off, an imprint layer of 1,024 units
    recovers over 40% of both providers' rows exactly (within 1e-3 per feature) from
    the decrypted sum of their CKKS-encrypted updates."""
    reference = prepare(two_providers.test, two_providers.schema).X
    share = attack_round(
        two_providers.providers,
        two_providers.schema,
        reference,
        bins=BINS,
        workdir=tmp_path,
        agent_options={"privacy": PrivacyPolicy(max_epsilon=None)},
    )
    assert share > 0.4


def test_default_record_level_dp_stops_the_imprint_attack(
    two_providers: FederatedSplit, tmp_path: Path
) -> None:
    """Robbing the Fed (Fowl et al., ICLR 2022) against agents with their default DP-SGD
    (ε = 8, per-example clip 1): the same crafted round recovers essentially no row."""
    assert DEFAULT_MAX_EPSILON <= 8
    reference = prepare(two_providers.test, two_providers.schema).X
    share = attack_round(
        two_providers.providers, two_providers.schema, reference, bins=BINS, workdir=tmp_path
    )
    assert share < 0.01


def test_a_job_cannot_ask_the_dp_away(two_providers: FederatedSplit, tmp_path: Path) -> None:
    """A buyer that posts the imprint job with privacy "off" gets no update from a default
    agent: its policy refuses to train without DP, so nothing reaches the sum."""
    reference = prepare(two_providers.test, two_providers.schema).X
    with pytest.raises(PrivacyDeclinedError):
        attack_round(
            two_providers.providers,
            two_providers.schema,
            reference,
            bins=BINS,
            workdir=tmp_path,
            job_privacy="off",
        )
