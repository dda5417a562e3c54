"""Streaming aggregation on the server and decryption of the sum by the buyer.

The server adds one validated envelope at a time into a running encrypted sum, as the
preset's codec adds (crypto/codec/): for CKKS, addition of ciphertexts in NTT form is
coefficient-wise addition modulo each data prime, which is exactly what SEAL's
`Evaluator.add` computes, done on numpy arrays so that memory stays O(model) and a round
never holds more than one update at once. An update checked from its file
(crypto/streaming.py) is added a piece at a time, so the sum and one piece are all a process
holds for it. The buyer's decryption is flooded with fresh noise (crypto/flooding.py) before
anyone sees it; `decrypt_aggregate_file` decrypts from a file a block of ciphertexts at a
time into one float32 result.

The aggregate's bytes are written and read in crypto/sumfile.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crypto.envelope import EnvelopeBinding, ValidatedEnvelope
from crypto.errors import AggregateError
from crypto.keys import BuyerKeys, PublicContext
from crypto.presets import Preset
from crypto.streaming import CheckedEnvelope, StreamedEnvelope
from crypto.sumfile import CheckedSum, SumHeader, pack_header, parse_header


class Accumulator:
    """The running encrypted sum of one round's updates."""

    def __init__(
        self,
        *,
        preset: Preset,
        fingerprint: str,
        job_id: str,
        round: int,
        param_count: int,
        summands: int,
        coefficients: np.ndarray,
        count: int = 0,
        weight_sum: float = 0.0,
        samples_sum: int = 0,
        provider_ids: list[str] | None = None,
    ) -> None:
        self.preset = preset
        self.fingerprint = fingerprint
        self.job_id = job_id
        self.round = round
        self.param_count = param_count
        self.summands = summands
        self.coefficients = coefficients
        self.count = count
        self.weight_sum = weight_sum
        self.samples_sum = samples_sum
        self.provider_ids = list(provider_ids or [])
        # Why this sum can no longer be trusted (an update failed half-way in), or None.
        self.void: str | None = None

    @classmethod
    def _from_header(cls, head: SumHeader, coefficients: np.ndarray) -> Accumulator:
        """A sum of `head`'s key, job, round, size and summands holding `coefficients`."""
        return cls(
            preset=head.preset,
            fingerprint=head.fingerprint,
            job_id=head.job_id,
            round=head.round,
            param_count=head.param_count,
            summands=head.summands,
            coefficients=coefficients,
        )

    @classmethod
    def empty_like(cls, head: SumHeader) -> Accumulator:
        """An empty sum of the same key, job, round, size and summands as `head`'s."""
        return cls._from_header(head, head.preset.codec.zero_sum(head.param_count))

    def _usable(self) -> None:
        if self.void is not None:
            raise AggregateError(f"this sum is void: {self.void}")

    @classmethod
    def empty(
        cls,
        ctx: PublicContext,
        *,
        job_id: str,
        round: int,
        param_count: int,
        summands: int | None = None,
    ) -> Accumulator:
        preset = ctx.preset
        binding = EnvelopeBinding(job_id, round, "", param_count, summands)
        return cls(
            preset=preset,
            fingerprint=ctx.fingerprint,
            job_id=job_id,
            round=round,
            param_count=param_count,
            summands=binding.resolved_summands(preset),
            coefficients=preset.codec.zero_sum(param_count),
        )

    def add(self, update: ValidatedEnvelope | CheckedEnvelope | StreamedEnvelope) -> None:
        """Add one validated update; refuses anything that does not belong in this sum.

        A checked envelope is read from its file a piece at a time. Should the file no longer
        hold what was checked, the sum is left void (every later use refuses it): the pieces
        added before cannot be taken back without keeping them."""
        self._usable()
        h = update.header
        if (h.fingerprint, h.job_id, h.round, h.param_count, h.summands) != (
            self.fingerprint,
            self.job_id,
            self.round,
            self.param_count,
            self.summands,
        ):
            raise AggregateError("update belongs to another key, job, round or model size")
        if h.provider_id in self.provider_ids:
            raise AggregateError(f"provider {h.provider_id} is already in this aggregate")
        if self.count >= self.summands:
            raise AggregateError(f"this aggregate holds at most {self.summands} updates")
        if isinstance(update, ValidatedEnvelope):
            self.preset.codec.add_into(self.coefficients, update.coefficients)
        else:
            self._add_pieces(update, f"the update of {h.provider_id}")
        self.count += 1
        self.weight_sum += h.weight
        self.samples_sum += h.samples
        self.provider_ids.append(h.provider_id)

    def _add_pieces(
        self, source: CheckedEnvelope | StreamedEnvelope | CheckedSum, what: str
    ) -> None:
        """Add what `source` holds a piece at a time; void this sum if it fails half-way."""
        codec = self.preset.codec
        try:
            for piece, addend in source.addends():
                codec.add_piece(self.coefficients, piece, addend)
        except Exception as exc:
            self.void = f"{what} failed half-way in ({exc})"
            raise AggregateError(self.void) from exc

    def merge(self, other: Accumulator | CheckedSum) -> None:
        """Add another sum of the same round into this one (sums are associative); a
        checked sum file is added a piece at a time.

        Refuses a sum under another key, job, round or size, one that shares a provider
        with this one, or a total beyond `summands` updates."""
        self._usable()
        theirs = other.header if isinstance(other, CheckedSum) else other
        if isinstance(other, Accumulator):
            other._usable()
        if (theirs.fingerprint, theirs.job_id, theirs.round, theirs.param_count,
                theirs.summands) != (self.fingerprint, self.job_id, self.round,
                                     self.param_count, self.summands):  # fmt: skip
            raise AggregateError("sums belong to another key, job, round or model size")
        shared = set(self.provider_ids) & set(theirs.provider_ids)
        if shared:
            raise AggregateError(f"providers {sorted(shared)} are in both sums")
        if self.count + theirs.count > self.summands:
            raise AggregateError(f"this aggregate holds at most {self.summands} updates")
        if isinstance(other, Accumulator):
            self.preset.codec.add_into(self.coefficients, other.coefficients)
        else:
            self._add_pieces(other, "a stored sum")
        self.count += theirs.count
        self.weight_sum += theirs.weight_sum
        self.samples_sum += theirs.samples_sum
        self.provider_ids.extend(theirs.provider_ids)

    def _header(self, digest: bytes) -> SumHeader:
        return SumHeader(
            self.preset, self.fingerprint, self.job_id, self.round, self.param_count,
            self.summands, self.count, self.weight_sum, self.samples_sum,
            list(self.provider_ids), digest, 0,
        )  # fmt: skip

    def chunks(self) -> Generator[bytes, None, None]:
        """`to_bytes()` in pieces of about `PIECE_BYTES`, never whole: each piece is packed
        twice, once to hash the payload for the header and once to be written."""
        self._usable()
        codec = self.preset.codec
        pieces = codec.sum_pieces(self.param_count, 0, codec.sum_rows(self.param_count))
        digest = hashlib.sha256()
        for piece in pieces:
            digest.update(codec.pack_piece(self.coefficients, piece))
        yield pack_header(self._header(digest.digest()))
        for piece in pieces:
            yield codec.pack_piece(self.coefficients, piece)

    def to_bytes(self) -> bytes:
        self._usable()
        payload = self.preset.codec.pack_sum(self.coefficients)
        return pack_header(self._header(hashlib.sha256(payload).digest())) + payload

    @classmethod
    def from_bytes(cls, data: bytes, ctx: PublicContext | None = None) -> Accumulator:
        """Parse a persisted aggregate, checking it against `ctx` when given."""
        head = parse_header(data, ctx)
        payload = data[head.payload_start :]
        if len(payload) != head.payload_len:
            raise AggregateError("aggregate payload has the wrong size")
        if hashlib.sha256(payload).digest() != head.digest:
            raise AggregateError("aggregate payload does not match its hash")
        acc = cls._from_header(head, head.preset.codec.unpack_sum(payload, head.param_count))
        acc.count, acc.weight_sum, acc.samples_sum = head.count, head.weight_sum, head.samples_sum
        acc.provider_ids = list(head.provider_ids)
        return acc


@dataclass(frozen=True)
class DecryptedAggregate:
    """The buyer's view of a round: the sum of weighted updates, never a single one."""

    total: np.ndarray
    count: int
    weight_sum: float
    samples_sum: int
    provider_ids: list[str]

    @property
    def average(self) -> np.ndarray:
        """Weighted average update: Σ wᵢ·δᵢ / Σ wᵢ."""
        return (self.total / self.weight_sum).astype(np.float32)


def decrypt_aggregate(keys: BuyerKeys, data: bytes) -> DecryptedAggregate:
    """Decrypt an aggregate downloaded from the marketplace with the buyer's secret key.

    The sum carries fresh noise of `preset.flood_sigma` per value (crypto/flooding.py), so
    publishing anything computed from it does not give the buyer's secret key away.
    """
    acc = Accumulator.from_bytes(data)
    exact = _decrypt_exact(keys, acc)
    total = acc.preset.codec.flood(exact)
    return DecryptedAggregate(
        total=total.astype(np.float32),
        count=acc.count,
        weight_sum=acc.weight_sum,
        samples_sum=acc.samples_sum,
        provider_ids=acc.provider_ids,
    )


def decrypt_aggregate_file(keys: BuyerKeys, path: str | Path) -> DecryptedAggregate:
    """`decrypt_aggregate` of the aggregate in the file at `path`, a block of ciphertexts at
    a time: memory is the float32 result and one block's scratch, never the encrypted sum or
    its float64 decryption. Each block is flooded as it is decrypted (fresh noise per value,
    the same distribution as `decrypt_aggregate`'s)."""
    with open(path, "rb") as handle:
        checked = CheckedSum.open(handle)
        head = checked.header
        _check_decryptable(keys, head.fingerprint, head.count)
        codec = head.preset.codec
        total = np.empty(head.param_count, dtype=np.float32)
        rows, per, width = (
            codec.sum_rows(head.param_count),
            codec.rows_per_block(),
            codec.row_values,
        )
        for first in range(0, rows, per):
            count = min(per, rows - first)
            start = first * width
            values = min(count * width, head.param_count - start)
            exact = codec.decrypt_exact(keys, checked.rows(first, count), values)
            total[start : start + values] = codec.flood(exact)
    return DecryptedAggregate(
        total=total,
        count=head.count,
        weight_sum=head.weight_sum,
        samples_sum=head.samples_sum,
        provider_ids=head.provider_ids,
    )


def _check_decryptable(keys: BuyerKeys, fingerprint: str, count: int) -> None:
    if fingerprint != keys.fingerprint:
        raise AggregateError("aggregate was encrypted under another key than this buyer's")
    if count == 0:
        raise AggregateError("aggregate holds no updates")


def _decrypt_exact(keys: BuyerKeys, acc: Accumulator) -> np.ndarray:
    """The sum exactly as the secret key decrypts it (float64, `param_count` values).

    Never return this from a public function: published, it reveals the secret key.
    """
    _check_decryptable(keys, acc.fingerprint, acc.count)
    return acc.preset.codec.decrypt_exact(keys, acc.coefficients, acc.param_count)
